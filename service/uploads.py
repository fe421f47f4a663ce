"""Uploaded feature files (``POST /predict``): checked on their metadata, then decoded within bounds.

HDF5 can point outside itself: external links, datasets stored in external raw files, virtual datasets.
Reading those for an untrusted upload would read server files, so such files are refused. A file of a
few KB can also declare terabytes (unwritten datasets read as fill values, gzip bombs, absurd widths),
so width, dtype, rows, the decoded size and the chunk size are checked from the datasets' metadata
(:class:`acmil.features.ReadLimits`) before a byte of data is read, and the data is then read in
bounded blocks. :class:`UploadSlots` bounds how many uploads are decoded at once, so the memory of
the service stays within ``max_concurrent_uploads × max_upload_feature_bytes`` (plus the forward).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py

from acmil.features import FeatureFileError, ReadLimits, SlideFeatures, read_features, read_meta

from .errors import BadInput, Unavailable

MAX_STEM = 100  # an upload's stem names a temporary file: keep it well under the 255-byte file-name limit


def upload_stem(filename: str | None) -> str:
    """A safe, short file stem for an upload's client-given name (it only ever names a temporary file)."""
    stem = Path(Path(filename or "upload.h5").name).stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:MAX_STEM] or "upload"


def limits_for(settings: Any, in_dim: int) -> ReadLimits:
    """The bounds an upload must meet: the model's width, the tile and decoded-size limits."""
    return ReadLimits(dim=in_dim, max_rows=settings.max_upload_tiles, max_bytes=settings.max_upload_feature_bytes)


def _walk(h5: h5py.File, name: str) -> None:
    paths: list[str] = []
    # Collect first: an exception raised inside h5py's visitor callback surfaces as a SystemError.
    if hasattr(h5, "visit_links"):  # h5py >= 3.11 also lists links whose target is missing
        h5.visit_links(paths.append)
    else:
        h5.visit(paths.append)
    for path in paths:
        if isinstance(h5.get(path, getlink=True), h5py.ExternalLink):
            raise BadInput(f"{name}: refers to another file ({path!r} is an external link)")
        obj = h5.get(path)
        if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
            raise BadInput(f"{name}: dataset {path!r} stores its data outside the file")


def _public(err: Exception, path: Path, name: str) -> str:
    return str(err).replace(str(path), name)


def check_upload(path: Path, name: str, limits: ReadLimits) -> None:
    """Raise :class:`BadInput` (422) unless ``path`` is a self-contained feature file within ``limits``.

    Reads metadata only (links, shapes, dtypes, attributes), never the data.
    """
    try:
        with h5py.File(path, "r") as h5:
            _walk(h5, name)
    except BadInput:
        raise
    except OSError as err:
        raise BadInput(f"{name}: not a readable HDF5 file ({_public(err, path, name)})") from err
    try:
        read_meta(path, limits=limits)
    except FeatureFileError as err:
        raise BadInput(_public(err, path, name)) from err


def decode_upload(path: Path, name: str, limits: ReadLimits) -> SlideFeatures:
    """Check, then read, an uploaded feature file (within ``limits``); 422 with the client's file name."""
    check_upload(path, name, limits)
    try:
        return read_features(path, limits=limits)
    except FeatureFileError as err:
        raise BadInput(_public(err, path, name)) from err


class UploadSlots:
    """At most ``size`` uploads decoded at once; a request that waits ``wait_s`` in vain gets a 503."""

    def __init__(self, size: int, wait_s: float) -> None:
        self.size = size
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise Unavailable(
                f"server busy: {self.size} uploads are being decoded already; retry in a few seconds",
                retry_after_s=max(1, round(self.wait_s)),
            )
        try:
            yield
        finally:
            self._slots.release()
