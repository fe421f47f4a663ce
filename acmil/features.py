"""The per-slide feature file (format version 1, see DESIGN.md) and readers for other tools' files.

Everything that reads or writes patch features goes through this module: preprocessing writes with
:class:`FeatureWriter`, training and the service read with :func:`read_features` / :func:`read_meta`.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from acmil.atomic import AtomicWriteError, publish, temp_path
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

FORMAT_VERSION = 1


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


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


class DiskFullError(OSError):
    """The output file system is full (ENOSPC / EDQUOT); the message names the file being written."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_error(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` as an OSError whose message names ``path``: a :class:`DiskFullError` when the disk is full."""
    if is_disk_full(err):
        return DiskFullError(err.errno, f"disk full while writing {path}")
    return OSError(err.errno, f"cannot write {path} ({err.strerror or err})")


class _GuardedFile:
    """The file object HDF5 writes through (h5py's ``fileobj`` driver): the first failed write is recorded and
    every later write is dropped, so HDF5 itself never sees an I/O error.

    Why: after a failed write (disk full) HDF5 cannot close the file (its metadata cache stays dirty), and the
    library then crashes at interpreter exit (segfault, rc 139). Here the broken file closes normally, the
    writer discards it and raises a :class:`DiskFullError` naming it.
    """

    def __init__(self, path: Path, shown_as: Path) -> None:
        self.path = shown_as  # the name errors give (the final name, not the temporary one)
        self._f = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed by FeatureWriter; unbuffered: errors at once
        self.error: OSError | None = None

    def _guard(self, op, *args, default=None):
        if self.error is not None:
            return default
        try:
            return op(*args)
        except OSError as err:
            self.error = err
            return default

    def _write_all(self, view: memoryview) -> None:
        while view:  # a raw write may be short (the disk filling up): the next one then raises ENOSPC
            view = view[self._f.write(view) :]

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._guard(self._write_all, view)
        return len(view)  # dropped writes "succeed": the file is discarded anyway

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def readinto(self, buffer) -> int:
        return self._f.readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._guard(self._f.truncate, size, default=size or 0)

    def flush(self) -> None:
        self._guard(self._f.flush)

    def check(self) -> None:
        """Raise the recorded error, naming the file."""
        if self.error is not None:
            raise disk_error(self.error, self.path)

    def sync_and_close(self) -> None:
        """Flush to stable storage (a full disk can surface only here) and close; raise the first error."""
        self.flush()
        self._guard(os.fsync, self._f.fileno())
        self._f.close()
        self.check()


class FeatureWriter:
    """Write one format-1 feature file incrementally and atomically.

    Rows are appended as they are computed into a temporary file in the destination folder; the file is
    renamed to its final name only when :meth:`close` succeeds, so a file with the final name is always
    whole. On an exception inside the ``with`` block the temporary file is removed. A full disk raises
    :class:`DiskFullError` ("disk full while writing <file>") from the constructor, :meth:`append` or
    :meth:`close`; the temporary file is then already removed.

    Example::

        with FeatureWriter(out / "slide.h5", dim=512, attrs={...}, coord_attrs={...}) as w:
            for feats, coords in batches:
                w.append(feats, coords)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dim: int,
        attrs: dict[str, Any] | None = None,
        coord_attrs: dict[str, Any] | None = None,
        dtype: str = "float32",
        chunk_rows: int = 1024,
    ) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.attrs = dict(attrs or {})
        self.coord_attrs = dict(coord_attrs or {})
        self.tmp_path = temp_path(self.path)  # named as acmil.atomic names them: atomic.leftovers() finds it
        self.n_rows = 0
        self._h5: h5py.File | None = None
        try:
            self._file = _GuardedFile(self.tmp_path, self.path)
        except OSError as err:
            raise disk_error(err, self.path) from err
        try:
            self._h5 = h5py.File(self._file, "w")
            self._features = self._h5.create_dataset(
                "features",
                shape=(0, self.dim),
                maxshape=(None, self.dim),
                dtype=dtype,
                chunks=(chunk_rows, self.dim),
            )
            self._coords = self._h5.create_dataset(
                "coords", shape=(0, 2), maxshape=(None, 2), dtype="int64", chunks=(chunk_rows, 2)
            )
            self._check()
        except BaseException:
            self.abort()
            raise

    def _check(self) -> None:
        if self._file.error is not None:
            err = disk_error(self._file.error, self.path)
            self.abort()
            raise err

    def append(self, features: np.ndarray, coords: np.ndarray) -> None:
        """Append rows. features: (n, D); coords: (n, 2) level-0 (x, y)."""
        features = np.asarray(features)
        coords = np.asarray(coords, dtype=np.int64)
        if features.ndim != 2 or features.shape[1] != self.dim or coords.shape != (features.shape[0], 2):
            raise ValueError(f"{self.path}: bad rows, features {features.shape} / coords {coords.shape}")
        n = features.shape[0]
        self._features.resize(self.n_rows + n, axis=0)
        self._coords.resize(self.n_rows + n, axis=0)
        self._features[self.n_rows :] = features
        self._coords[self.n_rows :] = coords
        self.n_rows += n
        self._check()

    def close(self) -> Path:
        """Write the attributes, close, and rename into place. Returns the final path."""
        try:
            attrs = {"format_version": FORMAT_VERSION, "created": datetime.now(timezone.utc).isoformat(), **self.attrs}
            for key, value in attrs.items():
                self._h5.attrs[key] = _attr_value(value)
            for key, value in self.coord_attrs.items():
                self._coords.attrs[key] = _attr_value(value)
            self._h5.close()
            self._file.sync_and_close()  # the guarded fsync: a full disk surfaces here as DiskFullError
            try:
                publish(self.tmp_path, self.path)
            except AtomicWriteError as err:  # names the file already; a full disk keeps its own type
                if is_disk_full(err):
                    raise disk_error(err, self.path) from err
                raise
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard the temporary file."""
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # noqa: BLE001 - already closed or broken; removal below is what matters
                pass
        if hasattr(self, "_file"):
            self._file.error = self._file.error or OSError("aborted")  # drop whatever is still buffered
            try:
                self._file._f.close()
            except OSError:
                pass
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_features(
    path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    attrs: dict[str, Any] | None = None,
    coord_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a whole format-1 file at once (atomically)."""
    features = np.asarray(features)
    with FeatureWriter(path, features.shape[1], attrs, coord_attrs, dtype=str(features.dtype)) as writer:
        writer.append(features, coords)
    return Path(path)


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
