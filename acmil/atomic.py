"""Result files written atomically: a temporary file in the destination folder, flushed to disk (fsync) and
renamed when complete, so a file with its final name is always whole (a crash, a kill or a full disk leaves
the previous file, never a half-written one). Every error names the file it was writing."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_REASONS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system"}


class AtomicWriteError(OSError):
    """Writing ``filename`` failed; ``errno`` is the underlying error's (ENOSPC for a full disk)."""


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk: a rename is only durable after both."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)


def write_error(path: str | os.PathLike, err: OSError) -> AtomicWriteError:
    """An OSError that says which file could not be written and why, in words ("disk full")."""
    reason = _REASONS.get(err.errno or 0, err.strerror or str(err))
    wrapped = AtomicWriteError(err.errno, f"cannot write {path}: {reason}")
    wrapped.filename = str(path)
    return wrapped


PARTIAL_SUFFIX = ".partial"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<8 hex>.partial`` (hidden, and never a final name)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")


def leftovers(path: str | os.PathLike) -> list[Path]:
    """The temporary files of ``path`` (named by :func:`temp_path`) that a killed writer left in its folder.

    The name is matched literally, never as a glob: the leftovers of ``*.h5`` are not those of ``a.h5``.
    Delete them only when no live writer can own them (preprocessing holds the slide's lease).
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}{re.escape(PARTIAL_SUFFIX)}")
    try:
        names = sorted(entry.name for entry in path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [path.parent / name for name in names if pattern.fullmatch(name)]


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give the complete file ``tmp`` its final name ``path``: fsync it, rename it (atomic: ``path`` is the
    previous file or the new one, never a mix) and fsync the folder so the rename survives a power cut.

    For writers that cannot use :func:`atomic_path`: a final name known only once the file is written (an
    upload named by its hash), or a writer with its own temporary file. An OSError is raised as
    :class:`AtomicWriteError` naming ``path``; ``tmp`` is then left for the caller to remove.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, fsync it and rename it to ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content; an OSError (disk
    full, permission) is raised again as :class:`AtomicWriteError` naming ``path``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        publish(tmp, path)
    except AtomicWriteError:
        raise
    except OSError as err:
        raise write_error(path, err) from err
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is gone or unwritable: nothing was left in it


def _json_default(value: Any) -> Any:
    np = sys.modules.get("numpy")  # numpy values exist only once numpy is imported: commands' --help stay light
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy values and paths converted)."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"  # serialise first: a bad value writes nothing
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV; columns are ``fieldnames`` (default: the first row's keys), extra keys ignored."""
    fieldnames = list(fieldnames or (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` atomically (``target`` is whole or keeps its previous content)."""
    import shutil

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically. Serialised in memory first: torch's own file writer turns a full disk into
    "RuntimeError: basic_ios::clear: iostream error", a plain write gives the OSError (ENOSPC) named here."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(buffer.getbuffer())
    return Path(path)
