"""The per-slide feature file (format version 1, see DESIGN.md) and readers for other tools' files.

Everything that reads or writes patch features goes through this module: preprocessing writes with
:class:`FeatureWriter` (in :mod:`acmil.feature_writer`, re-exported here), training and the service read with
:func:`read_features` / :func:`read_meta`; the header checks are :mod:`acmil.feature_checks`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from acmil.feature_checks import (
    FeatureFileError,
    ReadLimits,
    check_layout,
    checked_geometry,
    plain_value,
    read_attrs,
    read_coords,
    read_rows,
    text_ok,
)
from acmil.feature_writer import FORMAT_VERSION, DiskFullError, FeatureWriter, disk_error, is_disk_full, write_features

__all__ = [
    "FORMAT_VERSION",
    "DiskFullError",
    "FeatureFileError",
    "FeatureMeta",
    "FeatureWriter",
    "ReadLimits",
    "SlideFeatures",
    "disk_error",
    "infer_patch_size",
    "is_disk_full",
    "list_feature_files",
    "provenance",
    "read_feature_matrix",
    "read_features",
    "read_meta",
    "write_features",
]


@dataclass
class SlideFeatures:
    """Patch features of one slide.

    Attributes:
        slide_id: slide file name without extension.
        features: (N, D) float32.
        coords: (N, 2) int64 level-0 (x, y) of each patch's top-left corner.
        attrs: file-level provenance attributes (empty for foreign formats).
        coord_attrs: TRIDENT-style attributes of ``coords`` (patch size, magnification, ...).
    """

    slide_id: str
    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    coord_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def patch_size_level0(self) -> int | None:
        """Side of one patch in level-0 pixels, from the attributes or inferred from the coordinate grid."""
        value = self.coord_attrs.get("patch_size_level0")
        if value is not None:
            return int(value)
        return infer_patch_size(self.coords)


@dataclass
class FeatureMeta:
    """What can be learnt about a feature file without reading its features."""

    path: Path
    slide_id: str
    n_patches: int
    dim: int
    attrs: dict[str, Any]
    coord_attrs: dict[str, Any]
    kind: str  # "format1", "clam", "trident" or "acmil_reference"


def infer_patch_size(coords: np.ndarray) -> int | None:
    """Smallest positive step of the coordinate grid along x or y, or None for fewer than two patches."""
    steps = []
    for axis in (0, 1):
        values = np.unique(np.asarray(coords)[:, axis])
        if values.size > 1:
            steps.append(int(np.diff(values).min()))
    return min(steps) if steps else None


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise FeatureFileError(f"{path}: feature file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({err})") from err


def _locate(h5: h5py.File, path: Path, slide_id: str | None) -> tuple[h5py.Group, str, str]:
    """The group that holds features/coords, the slide id, and the file kind."""
    if "features" in h5:
        if "format_version" in h5.attrs:
            kind = "format1"
        elif isinstance(h5.get("coords"), h5py.Dataset) and len(h5["coords"].attrs):
            kind = "trident"
        else:
            kind = "clam"
        if slide_id is None:
            slide_id = str(plain_value(h5.attrs.get("slide_id", path.stem)))
            if not text_ok(slide_id):
                raise FeatureFileError(f"{path}: attribute 'slide_id' is not valid UTF-8 text")
        return h5, slide_id, kind
    groups = [k for k in h5.keys() if isinstance(h5.get(k), h5py.Group) and "feat" in h5[k]]
    if groups:
        if slide_id is None:
            if len(groups) != 1:
                raise FeatureFileError(
                    f"{path}: ACMIL reference file with {len(groups)} slides; name one of them (slide_id)"
                )
            slide_id = groups[0]
        if slide_id not in h5 or "feat" not in h5[slide_id]:
            raise FeatureFileError(f"{path}: slide {slide_id!r} not found in the ACMIL reference file")
        return h5[slide_id], slide_id, "acmil_reference"
    raise FeatureFileError(f"{path}: no 'features' dataset (nor ACMIL reference '/<slide>/feat' groups)")


def _datasets(group: h5py.Group, kind: str, path: Path) -> tuple[h5py.Dataset, h5py.Dataset | None]:
    feats_name = "feat" if kind == "acmil_reference" else "features"
    feats, coords = group.get(feats_name), group.get("coords")
    for obj in (feats, coords):
        if obj is not None and not isinstance(obj, h5py.Dataset):
            raise FeatureFileError(f"{path}: {obj.name!r} is a {type(obj).__name__.lower()}, not a dataset")
    return feats, coords


def read_meta(path: str | os.PathLike, slide_id: str | None = None, limits: ReadLimits | None = None) -> FeatureMeta:
    """Shape and attributes of a feature file, reading no feature values.

    Raises:
        FeatureFileError: missing, not HDF5, malformed (a group where a dataset belongs, wrong shapes or dtypes,
            bad geometry attributes), or beyond ``limits``.
    """
    path = Path(path)
    with _open(path) as h5:
        try:
            group, sid, kind = _locate(h5, path, slide_id)
            feats, coords = _datasets(group, kind, path)
            layout = check_layout(feats, coords, path, limits)
            coord_attrs = checked_geometry(read_attrs(coords, path), path) if coords is not None else {}
            attrs = read_attrs(h5, path) if kind != "acmil_reference" else read_attrs(group, path)
        except (KeyError, OSError) as err:
            raise FeatureFileError(f"{path}: malformed feature file ({err})") from err
    return FeatureMeta(path, sid, layout.n, layout.d, attrs, coord_attrs, kind)


def read_features(
    path: str | os.PathLike, slide_id: str | None = None, validate: bool = True, limits: ReadLimits | None = None
) -> SlideFeatures:
    """Read one slide's features (as float32) and coords from any supported file kind.

    Shapes, dtypes and ``limits`` are checked on the metadata first; values are then read in blocks of
    whole chunks straight into the float32 result, so memory stays at the result plus one block.

    Raises:
        FeatureFileError: the file is missing, not HDF5, malformed, beyond ``limits``, empty, or holds NaN/inf.
    """
    path = Path(path)
    with _open(path) as h5:
        try:
            group, sid, kind = _locate(h5, path, slide_id)
            feats_ds, coords_ds = _datasets(group, kind, path)
            layout = check_layout(feats_ds, coords_ds, path, limits)
            coord_attrs = checked_geometry(read_attrs(coords_ds, path), path) if coords_ds is not None else {}
            attrs = read_attrs(h5, path) if kind != "acmil_reference" else read_attrs(group, path)
            features = read_rows(feats_ds, layout.n, layout.d, layout.feats_3d, np.dtype(np.float32))
            if coords_ds is not None:
                coords = read_coords(coords_ds, layout, path)
            else:
                coords = np.zeros((layout.n, 2), dtype=np.int64)
        except (KeyError, OSError, TypeError, ValueError) as err:
            if isinstance(err, FeatureFileError):
                raise
            raise FeatureFileError(f"{path}: malformed or truncated feature file ({err})") from err
    if validate:
        if features.shape[0] == 0:
            raise FeatureFileError(f"{path}: empty bag (0 patches)")
        finite = np.isfinite(features).all(axis=1)
        if not finite.all():
            raise FeatureFileError(f"{path}: {int((~finite).sum())} patch rows contain NaN or inf")
    return SlideFeatures(sid, features, coords, attrs, coord_attrs)


def read_feature_matrix(path: str | os.PathLike) -> np.ndarray:
    """(N, D) float32 features of a file already checked (by :func:`read_meta` or a cohort scan), nothing else.

    Training reads every bag once an epoch; for small bags decoding the attributes and coordinates as
    :func:`read_features` does costs more than the training step. The ``features`` dataset (format 1, CLAM,
    TRIDENT; ``(1, N, D)`` too) is read in one pass, without a copy when it is float32 already; other layouts
    (ACMIL reference files) go through :func:`read_features`.

    Raises:
        FeatureFileError: the file is missing or no longer readable.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            feats = h5.get("features")
            if isinstance(feats, h5py.Dataset):
                values = feats[()]
                return np.asarray(values[0] if values.ndim == 3 else values, dtype=np.float32)
    except OSError as err:
        raise FeatureFileError(f"{path}: feature file missing or not readable ({err})") from err
    return read_features(path, validate=False).features


def list_feature_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Map slide_id -> path for the complete ``*.h5`` files of a folder (partial files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FeatureFileError(f"{directory}: features folder not found")
    return {p.stem: p for p in sorted(directory.glob("*.h5")) if p.is_file()}


def provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """The encoder/resolution provenance of a format-1 file's attributes, JSON fields decoded."""
    keys = (
        "encoder",
        "encoder_weights",
        "encoder_recipe",
        "transform",
        "mpp_level0",
        "mpp_target",
        "tissue_params",
        "tool_version",
    )
    out: dict[str, Any] = {}
    for key in keys:
        if key in attrs:
            value = attrs[key]
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            out[key] = value
    return out
