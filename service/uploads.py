"""Checks on an uploaded feature file before anything reads its data.

HDF5 can point outside itself: external links, datasets stored in external raw files, virtual datasets.
Reading those for an untrusted upload would read server files, so such files are refused, as are
files that declare more tiles than the service accepts (compressed data can expand far beyond the
upload size).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from acmil.features import FeatureFileError, read_meta

from .errors import BadInput


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


def check_upload(path: Path, name: str, max_tiles: int) -> None:
    """Raise :class:`BadInput` (422) unless ``path`` is a self-contained feature file of at most ``max_tiles``."""
    try:
        with h5py.File(path, "r") as h5:
            _walk(h5, name)
    except BadInput:
        raise
    except OSError as err:
        raise BadInput(f"{name}: not a readable HDF5 file ({err})") from err
    try:
        meta = read_meta(path)
    except FeatureFileError as err:
        raise BadInput(str(err).replace(str(path), name)) from err
    if meta.n_patches > max_tiles:
        raise BadInput(f"{name}: {meta.n_patches} tiles, more than the {max_tiles} an upload may hold")
