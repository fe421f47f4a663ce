"""``acmil convert``: CLAM, TRIDENT and ACMIL-reference feature files -> format-1 files (one per slide).

    acmil convert INPUT [INPUT ...] --out DIR [--encoder NAME] [--patch-size-level0 N] [--mpp X]
                  [--coords DIR] [--overwrite]

INPUT is a file or a folder (its ``*.h5`` / ``*.pt``, not recursive). Recognised:

- CLAM ``.h5`` (``features`` + ``coords``, no attributes): the patch size is taken from ``--patch-size-level0``
  or inferred from the coordinate grid (recorded as inferred).
- CLAM ``.pt`` (a features tensor only): coordinates come from the same-named ``.h5`` in ``--coords`` (CLAM's
  patch files, ``coords`` dataset with ``patch_size``/``patch_level`` attributes).
- TRIDENT ``.h5`` (``features`` + ``coords`` with TRIDENT attributes): attributes are kept.
- The ACMIL reference's one file per dataset (``/<slide_id>/feat``, ``/<slide_id>/coords``): one output per slide.

Every output records ``converted_from`` (kind and file). Existing outputs are kept unless ``--overwrite``. Exit code 0
only when every input converted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from acmil.features import FeatureFileError, SlideFeatures, infer_patch_size, read_features, read_meta, write_features


def _reference_slides(path: Path) -> list[str] | None:
    """Slide ids of an ACMIL reference file, or None for a one-slide file."""
    with h5py.File(path, "r") as h5:
        if "features" in h5:
            return None
        return [k for k in h5.keys() if isinstance(h5[k], h5py.Group) and "feat" in h5[k]]


def _load_pt(path: Path, coords_dir: Path | None) -> SlideFeatures:
    import torch

    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise FeatureFileError(f"{path}: cannot read a features tensor ({err})") from err
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
        raise FeatureFileError(f"{path}: expected a 2-D features tensor (N, D)")
    if coords_dir is None:
        raise FeatureFileError(f"{path}: a .pt file has no coordinates; give CLAM's patch .h5 folder with --coords")
    h5_path = coords_dir / f"{path.stem}.h5"
    if not h5_path.is_file():
        raise FeatureFileError(f"{path}: no coordinates file {h5_path}")
    with h5py.File(h5_path, "r") as h5:
        coords = np.asarray(h5["coords"][()], dtype=np.int64)
        cattrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5["coords"].attrs.items()}
    if coords.shape[0] != feats.shape[0]:
        raise FeatureFileError(f"{path}: {feats.shape[0]} features but {coords.shape[0]} coords in {h5_path}")
    return SlideFeatures(path.stem, feats.float().numpy(), coords, {}, cattrs)


def convert_one(
    sf: SlideFeatures,
    kind: str,
    source: Path,
    out_dir: Path,
    encoder: str | None,
    patch_size_level0: int | None,
    mpp: float | None,
) -> Path:
    """Write one slide's features as a format-1 file; returns its path."""
    cattrs = dict(sf.coord_attrs)
    if patch_size_level0 is not None:
        cattrs["patch_size_level0"] = int(patch_size_level0)
    elif "patch_size_level0" not in cattrs:
        size = cattrs.get("patch_size")
        level_ds = 2 ** int(cattrs.get("patch_level", 0)) if "patch_level" in cattrs else None  # CLAM patches
        inferred = int(size) * level_ds if size and level_ds else infer_patch_size(sf.coords)
        if inferred is not None:
            cattrs["patch_size_level0"] = int(inferred)
            cattrs["patch_size_level0_inferred"] = True
    cattrs.setdefault("name", sf.slide_id)
    attrs = {
        "slide_id": sf.slide_id,
        "encoder": encoder or sf.attrs.get("encoder") or cattrs.get("encoder") or "unknown",
        "encoder_weights": sf.attrs.get("encoder_weights", "unknown"),
        "converted_from": {"kind": kind, "file": source.name},
    }
    if mpp is not None or "mpp_level0" in sf.attrs:
        attrs["mpp_level0"] = float(mpp if mpp is not None else sf.attrs["mpp_level0"])
    return write_features(out_dir / f"{sf.slide_id}.h5", sf.features.astype(np.float32), sf.coords, attrs, cattrs)


def _inputs(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix in (".h5", ".pt") and not q.name.startswith("."))
        else:
            files.append(p)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="acmil convert", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path, help="feature files or folders of them")
    p.add_argument("--out", required=True, type=Path, help="output folder for <slide_id>.h5")
    p.add_argument("--encoder", help="encoder name to record (e.g. resnet50_trunc for CLAM's default)")
    p.add_argument("--patch-size-level0", type=int, help="patch side in level-0 px (else from attributes / grid)")
    p.add_argument("--mpp", type=float, help="µm per level-0 pixel to record")
    p.add_argument("--coords", type=Path, help="folder of CLAM patch .h5 files (coordinates for .pt inputs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n_ok, failures = 0, []
    for path in _inputs(args.inputs):
        try:
            if not path.is_file():
                raise FeatureFileError(f"{path}: not found")
            if path.suffix == ".pt":
                items = [(_load_pt(path, args.coords), "clam_pt")]
            else:
                try:
                    ids = _reference_slides(path)
                except OSError as err:
                    raise FeatureFileError(f"{path}: not a readable HDF5 file ({err})") from err
                if ids == []:
                    raise FeatureFileError(f"{path}: no 'features' dataset nor '/<slide>/feat' groups")
                items = [(read_features(path, sid), read_meta(path, sid).kind) for sid in (ids or [None])]
            for sf, kind in items:
                target = args.out / f"{sf.slide_id}.h5"
                if target.exists() and not args.overwrite:
                    print(f"skip {sf.slide_id}: {target} exists (--overwrite to replace)", file=sys.stderr)
                    continue
                convert_one(sf, kind, path, args.out, args.encoder, args.patch_size_level0, args.mpp)
                n_ok += 1
        except (FeatureFileError, OSError, KeyError, ValueError) as err:
            failures.append(f"{path}: {err}" if str(path) not in str(err) else str(err))
    print(f"convert: {n_ok} slide(s) written to {args.out}, {len(failures)} input(s) failed", file=sys.stderr)
    for msg in failures:
        print(f"  FAILED {msg}", file=sys.stderr)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
