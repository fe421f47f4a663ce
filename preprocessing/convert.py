"""``acmil convert``: CLAM, TRIDENT and ACMIL-reference feature files -> format-1 files (one per slide), and back.

    acmil convert INPUT [INPUT ...] --out DIR [--to acmil|trident|clam] [--encoder NAME]
                  [--patch-size-level0 N] [--mpp X] [--slides DIR] [--coords DIR] [--overwrite]

INPUT is a file or a folder (its ``*.h5`` / ``*.pt``, not recursive; CLAM's ``feat_dir`` is recognised by
its ``h5_files/`` and ``pt_files/`` and read from ``h5_files/``). Recognised:

- CLAM ``.h5`` (``features`` + ``coords``, no attributes) and ``.pt`` (a features tensor): the patch size and
  level-0 geometry come from CLAM's patch file in ``--coords`` (``patches/<slide>.h5``: ``patch_size`` at
  ``patch_level`` times that level's ``downsample``), else from ``--patch-size-level0``; only as a last
  resort are they inferred from the coordinate grid, which is wrong when CLAM ran with ``--step_size``
  below ``--patch_size`` (recorded as inferred, and said).
- TRIDENT ``.h5``: attributes are kept, the encoder name included.
- The ACMIL reference's one file per dataset (``/<slide_id>/feat``): one output per slide, and the
  per-slide ``label`` attributes as ``labels.csv`` beside the outputs.

µm/px is recorded from ``--mpp``, or from the slide itself when ``--slides`` holds it. Every output records
``converted_from`` (kind and file). Existing outputs are kept unless ``--overwrite``. ``--to trident|clam``
writes the other way (see :mod:`acmil.preprocessing.convert_export`). Exit code 0 only when every input
converted and at least one slide was written or already there. Takes ``--config FILE.yaml`` (keys: ``inputs``,
``out``, ``patch_size_level0``, ...) and ``--print_config``; from Python: ``run_convert(ConvertConfig(...))``.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.atomic import write_csv
from acmil.command import CommandParser, command_parser, config_from
from acmil.features import FeatureFileError, SlideFeatures, infer_patch_size, write_features

from .convert_export import TARGETS, export
from .convert_readers import Converted, EmptySlide, read_clam_pt, read_h5

LABELS_FILE = "labels.csv"


def _note(message: str) -> None:
    print(f"convert: {message}", file=sys.stderr)


def _slide_mpp(slides_dir: Path | None, slide_id: str) -> float | None:
    """µm per level-0 pixel of ``slides_dir/<slide_id>.*``, when that slide is there and says it."""
    if slides_dir is None:
        return None
    from .discover import SLIDE_EXTENSIONS
    from .slide import SlideError, open_slide

    if not slides_dir.is_dir():
        raise FeatureFileError(f"{slides_dir}: slides folder not found")
    for path in sorted(slides_dir.iterdir()):  # no glob: slide ids may hold glob metacharacters
        if path.stem != slide_id or path.suffix.lower() not in SLIDE_EXTENSIONS:
            continue
        try:
            with open_slide(path) as slide:
                return float(slide.mpp)
        except (SlideError, OSError) as err:
            _note(f"{slide_id}: no µm/px from {path} ({err})")
    return None


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
        cattrs.pop("patch_size_level0_inferred", None)
    elif "patch_size_level0" not in cattrs:
        inferred = infer_patch_size(sf.coords)
        if inferred is not None:
            cattrs["patch_size_level0"] = int(inferred)
            cattrs["patch_size_level0_inferred"] = True
            _note(
                f"{sf.slide_id}: patch size {inferred} px inferred from the coordinate grid (the grid step: wrong "
                "if patches overlapped); give --coords CLAM_RESULTS/patches or --patch-size-level0 to be sure"
            )
    cattrs.setdefault("name", sf.slide_id)
    attrs: dict[str, Any] = {
        "slide_id": sf.slide_id,
        "encoder": encoder or sf.attrs.get("encoder") or cattrs.get("encoder") or "unknown",
        "encoder_weights": sf.attrs.get("encoder_weights", "unknown"),
        "converted_from": {"kind": kind, "file": source.name},
    }
    if mpp is None and sf.attrs.get("mpp_level0") not in (None, ""):
        mpp = float(sf.attrs["mpp_level0"])
    if mpp is not None:
        attrs["mpp_level0"] = float(mpp)
        l0, target = cattrs.get("level0_magnification"), cattrs.get("target_magnification")
        if l0 and target:  # TRIDENT: tiles were read at level0_mag / target_mag times the level-0 µm/px
            attrs["mpp_target"] = float(mpp) * float(l0) / float(target)
    return write_features(out_dir / f"{sf.slide_id}.h5", sf.features.astype(np.float32), sf.coords, attrs, cattrs)


def _inputs(paths: list[Path], failures: list[str]) -> list[Path]:
    """The files to read; CLAM's feat_dir resolves to its h5_files/ (pt_files/ holds the same features)."""
    files: list[Path] = []
    for p in paths:
        if not p.is_dir():
            files.append(p)
            continue
        found = sorted(q for q in p.iterdir() if q.suffix in (".h5", ".pt") and q.is_file() and q.name[0] != ".")
        if not found:
            for sub in ("h5_files", "pt_files"):  # CLAM's extract_features_fp.py feat_dir
                if (p / sub).is_dir():
                    _note(f"{p}: CLAM feature folder, reading {p / sub}")
                    found = sorted(q for q in (p / sub).iterdir() if q.suffix in (".h5", ".pt") and q.name[0] != ".")
                    break
        if not found:
            failures.append(f"{p}: nothing to convert (no .h5 or .pt files, nor CLAM's h5_files/ or pt_files/)")
        files += found
    return files


def _read(path: Path, coords_dir: Path | None) -> list[Converted]:
    if not path.is_file():
        raise FeatureFileError(f"{path}: not found")
    return [read_clam_pt(path, coords_dir)] if path.suffix == ".pt" else read_h5(path, coords_dir)


def write_labels(out_dir: Path, labels: dict[str, Any]) -> Path:
    """``labels.csv`` (slide_id, label) beside the outputs, keeping the rows of other slides already there."""
    path = out_dir / LABELS_FILE
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = {r["slide_id"]: r for r in csv.DictReader(f) if r.get("slide_id")}
    for sid, label in labels.items():
        rows[sid] = {**rows.get(sid, {}), "slide_id": sid, "label": label}
    fields = list(dict.fromkeys(["slide_id", "label", *(k for r in rows.values() for k in r)]))
    return write_csv(path, [rows[s] for s in sorted(rows)], fields)


@dataclass(kw_only=True)
class ConvertConfig:
    """What ``acmil convert`` takes; each field is the option of the same name (``--patch-size-level0``)."""

    inputs: list[Path]  # feature files or folders of them
    out: Path
    to: str = "acmil"  # acmil (format 1), trident or clam
    encoder: str | None = None
    patch_size_level0: int | None = None
    mpp: float | None = None
    slides: Path | None = None
    coords: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.inputs = [Path(p) for p in self.inputs]
        self.out = Path(self.out)
        self.slides = None if self.slides is None else Path(self.slides)
        self.coords = None if self.coords is None else Path(self.coords)


@dataclass(kw_only=True)
class ConvertResult:
    """What one ``run_convert`` did: slides written, kept (outputs already there), failures, the labels file."""

    out: Path
    written: list[str] = field(default_factory=list)  # slide ids written
    kept: list[str] = field(default_factory=list)  # slide ids whose output existed (no --overwrite)
    failures: list[str] = field(default_factory=list)  # one message per failed input or slide
    labels_csv: Path | None = None  # OUT/labels.csv when an input carried slide labels

    @property
    def ok(self) -> bool:
        """Every input converted (the command's exit code 0)."""
        return not self.failures


def build_parser() -> CommandParser:
    p = command_parser("acmil convert", __doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path, help="feature files or folders of them")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--to",
        choices=("acmil", *TARGETS),
        default="acmil",
        help="layout to write: acmil (format 1, default), trident, or clam (h5_files/, pt_files/, patches/)",
    )
    p.add_argument("--encoder", help="encoder name to record (e.g. resnet50_trunc for CLAM's default)")
    p.add_argument("--patch-size-level0", type=int, help="patch side in level-0 px (else from attributes / grid)")
    p.add_argument("--mpp", type=float, help="µm per level-0 pixel to record")
    p.add_argument("--slides", type=Path, help="folder of the slides: µm/px is read from <slide_id>.* there")
    p.add_argument("--coords", type=Path, help="folder of CLAM patch .h5 files (CLAM_RESULTS/patches)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def run_convert(config: ConvertConfig) -> ConvertResult:
    """Convert every input into ``config.out``; a bad input becomes a failure message, never a crash.

    ``result.failures`` also says "nothing converted" when no slide was written nor already there.
    """
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    result = ConvertResult(out=out)
    labels: dict[str, Any] = {}
    for path in _inputs(config.inputs, result.failures):
        try:
            items = _read(path, config.coords)
        except EmptySlide as err:
            _note(f"skip {err}")
            continue
        except (FeatureFileError, OSError, KeyError, ValueError) as err:
            result.failures.append(f"{path}: {err}" if str(path) not in str(err) else str(err))
            continue
        for item in items:
            sf = item.slide
            try:
                if item.label is not None:
                    labels[sf.slide_id] = item.label
                if config.to != "acmil":
                    export(sf, config.to, out)
                    result.written.append(sf.slide_id)
                    continue
                target = out / f"{sf.slide_id}.h5"
                if target.exists() and not config.overwrite:
                    _note(f"skip {sf.slide_id}: {target} exists (--overwrite to replace)")
                    result.kept.append(sf.slide_id)
                    continue
                mpp = config.mpp if config.mpp is not None else _slide_mpp(config.slides, sf.slide_id)
                convert_one(sf, item.kind, path, out, config.encoder, config.patch_size_level0, mpp)
                result.written.append(sf.slide_id)
            except (FeatureFileError, OSError, KeyError, ValueError) as err:
                result.failures.append(f"{path} ({sf.slide_id}): {err}")
    if labels:
        result.labels_csv = write_labels(out, labels)
        _note(f"{len(labels)} slide label(s) written to {result.labels_csv}")
    if not result.written and not result.kept:
        result.failures.append("nothing converted")
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print (stderr). Exit code 0 only when every input converted and a slide was written or kept."""
    result = run_convert(config_from(build_parser().parse_args(argv), ConvertConfig))
    _note(f"{len(result.written)} slide(s) written to {result.out}, {len(result.failures)} input(s) failed")
    for msg in result.failures:
        print(f"  FAILED {msg}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
