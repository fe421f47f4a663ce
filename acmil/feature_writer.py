"""Writing the per-slide feature file (format version 1, see DESIGN.md): :class:`FeatureWriter` appends rows
as the encoder makes them and publishes the file under its final name only when it is whole.

A full disk becomes a :class:`DiskFullError` naming the file; HDF5 never sees the failed write (see
:class:`_GuardedFile`). Readers are in :mod:`acmil.features`, which re-exports these names.
"""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from acmil.atomic import AtomicWriteError, publish, temp_path

FORMAT_VERSION = 1


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
