"""Checks of a feature file made on its HDF5 metadata, and bounded reads of its datasets.

Everything here looks at shapes, dtypes, chunk sizes and attribute sizes before a value is read, so a
small crafted file cannot make a reader allocate what it declares (unwritten datasets, gzip bombs,
absurd widths); :func:`read_rows` then fills the result block by block. Used by :mod:`acmil.features`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np


class FeatureFileError(ValueError):
    """A feature file is missing, unreadable or malformed; the message names the file."""


def plain_value(value: Any) -> Any:
    """h5py attribute values as plain Python (bytes -> str, numpy scalars -> Python, JSON strings kept)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def text_ok(value: Any) -> bool:
    """False for text that is not valid UTF-8 (h5py hands it over with lone surrogates, which JSON cannot encode)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    elif isinstance(value, (list, tuple)):
        return all(text_ok(item) for item in value)
    return True


MAX_ATTR_BYTES = 1024 * 1024  # our attributes are scalars and short JSON; a bigger one is not ours to load


def too_big(stored: h5py.h5a.AttrID) -> bool:
    """Whether an attribute holds more than MAX_ATTR_BYTES (or that many 8-byte elements), before reading it."""
    if stored.shape is None:  # an empty (null) attribute
        return False
    try:
        size = stored.get_storage_size()
    except RuntimeError:  # HDF5 reports 0 bytes as an error
        size = 0
    return size > MAX_ATTR_BYTES or math.prod(stored.shape) > MAX_ATTR_BYTES // 8


def read_attrs(obj: h5py.HLObject, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in obj.attrs.keys():
        try:
            oversized = too_big(obj.attrs.get_id(key))
            value = None if oversized else plain_value(obj.attrs[key])
        except (OSError, TypeError, ValueError) as err:  # e.g. a datatype h5py cannot map
            raise FeatureFileError(f"{path}: cannot read attribute {key!r} of {obj.name!r} ({err})") from err
        if oversized:
            raise FeatureFileError(f"{path}: attribute {key!r} of {obj.name!r} is larger than {MAX_ATTR_BYTES} bytes")
        if not text_ok(key) or not text_ok(value):
            raise FeatureFileError(
                f"{path}: attribute {key.encode('utf-8', 'replace')!r} of {obj.name!r} is not valid UTF-8 text"
            )
        out[key] = value
    return out


# Geometry attributes of ``coords`` read as positive integers (level-0 pixels); MAX_PIXELS bounds any slide side.
GEOMETRY_ATTRS = ("patch_size_level0", "patch_size", "level0_width", "level0_height")
MAX_PIXELS = 10_000_000


def checked_geometry(coord_attrs: dict[str, Any], path: Path) -> dict[str, Any]:
    """``coord_attrs`` with its geometry attributes checked and made ``int``; "" (written for None) is dropped.

    Raises:
        FeatureFileError: a geometry attribute is not a whole number in 1..MAX_PIXELS (text, NaN, 1e300, -5).
    """
    out = dict(coord_attrs)
    for name in GEOMETRY_ATTRS:
        if name not in out:
            continue
        value = out[name]
        if isinstance(value, str) and not value.strip():
            del out[name]
            continue
        number = None
        if not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                number = None
        if number is None or not math.isfinite(number) or not 1 <= number <= MAX_PIXELS:
            raise FeatureFileError(
                f"{path}: coords attribute {name!r} must be a number of pixels in 1..{MAX_PIXELS}, got {value!r}"
            )
        out[name] = int(number)
    return out


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on an untrusted feature file, checked on its datasets' metadata before any value is read.

    Attributes:
        dim: the feature width D required (e.g. the model's in_dim); None accepts any.
        max_rows: most patches N.
        max_bytes: most bytes of the float32 (N, D) array the reader builds (N * D * 4).
        max_chunk_bytes: most bytes of one stored (decompressed) HDF5 chunk of either dataset.
    """

    dim: int | None = None
    max_rows: int | None = None
    max_bytes: int | None = None
    max_chunk_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Layout:
    """Shape of the features/coords datasets: N rows, D columns, and whether they carry a leading axis of 1."""

    n: int
    d: int
    feats_3d: bool
    coords_3d: bool


def check_layout(feats: h5py.Dataset, coords: h5py.Dataset | None, path: Path, limits: ReadLimits | None) -> Layout:
    """Check shapes and dtypes (and ``limits``) from the datasets' metadata alone; reads no values."""
    shape, kind = feats.shape, feats.dtype.kind
    feats_3d = len(shape) == 3 and shape[0] == 1  # some tools store (1, N, D)
    if feats_3d:
        shape = shape[1:]
    if len(shape) != 2:
        raise FeatureFileError(f"{path}: 'features' must be 2-D (N, D), got shape {feats.shape}")
    if kind != "f":
        raise FeatureFileError(f"{path}: features have dtype {feats.dtype}; expected floating point (float16/32/64)")
    n, d = int(shape[0]), int(shape[1])
    coords_3d = False
    if coords is not None:
        cshape = coords.shape
        coords_3d = len(cshape) == 3 and cshape[0] == 1
        if coords_3d:
            cshape = cshape[1:]
        if tuple(cshape) != (n, 2):
            raise FeatureFileError(f"{path}: 'coords' shape {coords.shape} does not match {n} feature rows (N, 2)")
        if coords.dtype.kind not in "iuf":
            raise FeatureFileError(f"{path}: coords have dtype {coords.dtype}; expected integers")
    if limits is not None:
        if limits.dim is not None and d != limits.dim:
            raise FeatureFileError(f"{path}: feature dim {d} does not match the model's in_dim {limits.dim}")
        if limits.max_rows is not None and n > limits.max_rows:
            raise FeatureFileError(f"{path}: {n} tiles, more than the {limits.max_rows} allowed")
        if limits.max_bytes is not None and n * d * 4 > limits.max_bytes:
            raise FeatureFileError(
                f"{path}: {n} x {d} features are {n * d * 4} bytes as float32, more than the {limits.max_bytes} allowed"
            )
        for ds in (feats, coords):
            if ds is not None and ds.chunks is not None:
                chunk = math.prod(ds.chunks) * ds.dtype.itemsize
                if chunk > limits.max_chunk_bytes:
                    raise FeatureFileError(
                        f"{path}: {ds.name!r} is stored in chunks of {chunk} bytes, more than "
                        f"the {limits.max_chunk_bytes} allowed"
                    )
    return Layout(n, d, feats_3d, coords_3d)


READ_BLOCK_BYTES = 16 * 1024 * 1024  # rows are read in blocks of about this size


def read_rows(ds: h5py.Dataset, n: int, width: int, leading: bool, dtype: np.dtype) -> np.ndarray:
    """(n, width) array of ``dtype`` filled block by block (whole chunks), so no full-size temporary exists."""
    out = np.empty((n, width), dtype=dtype)
    chunk_rows = ds.chunks[1 if leading else 0] if ds.chunks else 1
    row_bytes = max(1, width * max(ds.dtype.itemsize, out.itemsize))
    step = max(chunk_rows, READ_BLOCK_BYTES // row_bytes // chunk_rows * chunk_rows)
    same = ds.dtype == out.dtype
    for start in range(0, n, step):
        stop = min(n, start + step)
        source = np.s_[0, start:stop] if leading else np.s_[start:stop]
        if same:
            ds.read_direct(out, source_sel=source, dest_sel=np.s_[start:stop])
        else:  # numpy converts float16 several times faster than HDF5's type conversion
            out[start:stop] = ds[source]
    return out


def read_coords(ds: h5py.Dataset, layout: Layout, path: Path) -> np.ndarray:
    """(N, 2) int64 coords; float coords must be finite whole numbers."""
    if ds.dtype.kind in "iu":
        return read_rows(ds, layout.n, 2, layout.coords_3d, np.dtype(np.int64))
    values = read_rows(ds, layout.n, 2, layout.coords_3d, np.dtype(np.float64))
    bad = ~np.isfinite(values).all(axis=1) | (np.abs(values) > 2.0**53).any(axis=1)
    if bad.any():
        raise FeatureFileError(
            f"{path}: {int(bad.sum())} coords rows are NaN, inf or out of range (first at row {int(np.argmax(bad))})"
        )
    return values.astype(np.int64)
