"""Readers of other tools' feature layouts for ``acmil convert`` (facts from their code, see the tests).

- CLAM ``extract_features_fp.py``: ``feat_dir/h5_files/<slide>.h5`` (``features`` float32 (N, D), ``coords``
  int32, no attributes) and ``feat_dir/pt_files/<slide>.pt`` (a float32 tensor). Patch geometry is only in
  ``create_patches_fp.py``'s patch file ``patches/<slide>.h5``: ``coords`` with ``patch_size`` (px at
  ``patch_level``), ``patch_level``, ``downsample`` (an array: that level's downsample per axis),
  ``level_dim`` / ``downsampled_level_dim`` (that level's size), ``name``, ``save_path``.
- TRIDENT: ``features`` float32 (N, D) with ``encoder``, ``name``, ``savetodir`` on the dataset; ``coords``
  int64 with ``patch_size``, ``patch_size_level0``, magnifications, ``overlap``, level-0 size. An empty
  slide has ``features`` of shape (0,).
- The ACMIL reference's ``Step2_feature_extract.py``: one file per dataset, ``/<slide>/feat`` (float16),
  ``/<slide>/coords`` and the group attribute ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from acmil.features import FeatureFileError, SlideFeatures, read_features, read_meta


@dataclass
class Converted:
    """One slide read from a foreign file, with what the conversion learnt on the way."""

    slide: SlideFeatures
    kind: str  # "clam", "clam_pt", "trident", "acmil_reference", "format1"
    label: Any = None  # the reference file's per-slide label
    notes: tuple[str, ...] = ()


def plain_attr(value: Any) -> Any:
    """An HDF5 attribute as plain Python: arrays as lists (CLAM's ``downsample`` is one), bytes as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size != 1 else value.reshape(()).item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _axis_pair(value: Any) -> tuple[float, float] | None:
    """(x, y) of a CLAM per-axis attribute (array of two), or of a scalar."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return (float(value[0]), float(value[1] if len(value) > 1 else value[0])) if value else None
    return float(value), float(value)


def clam_patch_attrs(patch_file: Path) -> dict[str, Any]:
    """Format-1 ``coords`` attributes from a CLAM patch file (patch size, level-0 size, level-0 extent)."""
    try:
        with h5py.File(patch_file, "r") as h5:
            raw = {k: plain_attr(v) for k, v in h5["coords"].attrs.items()}
    except (OSError, KeyError) as err:
        raise FeatureFileError(f"{patch_file}: not a readable CLAM patch file ({err})") from err
    if "patch_size" not in raw:
        raise FeatureFileError(f"{patch_file}: CLAM patch file without a 'patch_size' attribute")
    level = int(raw.get("patch_level", 0))
    downsample = _axis_pair(raw.get("downsample"))
    if downsample is None:  # only very old CLAM files: assume the usual factor-2 pyramid, and say so
        downsample = (2.0**level, 2.0**level)
        raw["downsample_assumed"] = True
    size = int(raw["patch_size"])
    attrs: dict[str, Any] = {
        "patch_size": size,
        "patch_size_level0": int(round(size * downsample[0])),  # the level's own downsample, never 2**level
        "patch_level": level,
        "clam_downsample": list(downsample),
        "name": raw.get("name", patch_file.stem),
    }
    level_dim = _axis_pair(raw.get("level_dim"))
    if level_dim is not None:  # CLAM's downsample is level-0 size / level size, so this is the level-0 size
        attrs["level0_width"] = int(round(level_dim[0] * downsample[0]))
        attrs["level0_height"] = int(round(level_dim[1] * downsample[1]))
    if raw.get("downsample_assumed"):
        attrs["downsample_assumed"] = True
    return attrs


def _patch_file(coords_dir: Path | None, slide_id: str) -> Path | None:
    if coords_dir is None:
        return None
    path = coords_dir / f"{slide_id}.h5"
    return path if path.is_file() else None


def read_clam_pt(path: Path, coords_dir: Path | None) -> Converted:
    """A CLAM ``pt_files/<slide>.pt``: features from the tensor, coordinates and geometry from the patch file."""
    import torch

    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise FeatureFileError(f"{path}: cannot read a features tensor ({err})") from err
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
        raise FeatureFileError(f"{path}: expected a 2-D features tensor (N, D)")
    if coords_dir is None:
        raise FeatureFileError(f"{path}: a .pt file has no coordinates; give CLAM's patch .h5 folder with --coords")
    patch_file = _patch_file(coords_dir, path.stem)
    if patch_file is None:
        raise FeatureFileError(f"{path}: no coordinates file {coords_dir / (path.stem + '.h5')}")
    with h5py.File(patch_file, "r") as h5:
        coords = np.asarray(h5["coords"][()], dtype=np.int64)
    if coords.shape[0] != feats.shape[0]:
        raise FeatureFileError(f"{path}: {feats.shape[0]} features but {coords.shape[0]} coords in {patch_file}")
    slide = SlideFeatures(path.stem, feats.float().numpy(), coords, {}, clam_patch_attrs(patch_file))
    return Converted(slide, "clam_pt", notes=(f"geometry from {patch_file}",))


def _trident_feature_attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as h5:
        ds = h5.get("features")
        return {k: plain_attr(v) for k, v in ds.attrs.items()} if isinstance(ds, h5py.Dataset) else {}


def _empty_slide(path: Path) -> bool:
    with h5py.File(path, "r") as h5:
        ds = h5.get("features")
        return isinstance(ds, h5py.Dataset) and (ds.shape == (0,) or (len(ds.shape) >= 1 and ds.shape[0] == 0))


class EmptySlide(FeatureFileError):
    """A file of a slide without patches (TRIDENT writes these for slides without tissue)."""


def read_h5(path: Path, coords_dir: Path | None) -> list[Converted]:
    """Every slide of an HDF5 feature file (one, or many for the reference's per-dataset file)."""
    try:
        with h5py.File(path, "r") as h5:
            groups = (
                None
                if "features" in h5
                else [k for k in h5.keys() if isinstance(h5[k], h5py.Group) and "feat" in h5[k]]
            )
    except OSError as err:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({err})") from err
    if groups == []:
        raise FeatureFileError(f"{path}: no 'features' dataset nor '/<slide>/feat' groups")
    if groups:
        out = []
        for sid in groups:
            slide = read_features(path, sid)
            out.append(Converted(slide, "acmil_reference", label=slide.attrs.get("label")))
        return out
    if _empty_slide(path):
        raise EmptySlide(f"{path}: empty slide (0 patches; no tissue was found): nothing to convert")
    kind = read_meta(path).kind
    slide = read_features(path)
    notes: list[str] = []
    if kind == "trident":
        encoder = _trident_feature_attrs(path).get("encoder")
        if encoder and encoder != "None":
            slide.attrs.setdefault("encoder", encoder)  # TRIDENT keeps it on the features dataset
    if kind == "clam":
        patch_file = _patch_file(coords_dir, slide.slide_id)
        if patch_file is not None:
            slide.coord_attrs.update(clam_patch_attrs(patch_file))
            notes.append(f"geometry from {patch_file}")
    return [Converted(slide, kind, notes=tuple(notes))]
