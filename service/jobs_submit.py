"""Taking a slide in: streaming an upload to disk under a server-chosen name (size limit, quota), resolving a
path inside the import folder, and opening the slide with OpenSlide before anything is queued."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from acmil.atomic import publish

from .errors import ServiceError
from .registry import SLIDE_EXTENSIONS

CHUNK = 4 * 1024 * 1024


class JobError(ServiceError):
    """A refused submission, with its HTTP status (413, 422, 429, 507 ...)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def check_slide(path: Path, shown: str) -> None:
    """422 unless OpenSlide (or the plain-TIFF reader) opens the file with a usable µm/px."""
    from acmil.preprocessing.api import open_slide

    try:
        open_slide(path).close()
    except Exception as err:  # noqa: BLE001 - every reason becomes one clear 422
        raise JobError(
            422, f"{shown}: not a slide that can be processed ({str(err).replace(str(path), shown)})"
        ) from None


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def extension_of(name: str) -> str:
    ext = Path(str(name)).suffix.lower()
    if ext not in SLIDE_EXTENSIONS or ext == ".mrxs":  # MIRAX is a folder of files: not one upload
        known = ", ".join(sorted(SLIDE_EXTENSIONS - {".mrxs"}))
        raise JobError(422, f"{name!r}: not a slide file name (one of {known})")
    return ext


async def store_upload(service, chunks: AsyncIterator[bytes], name: str) -> tuple[Path, str]:  # noqa: ANN001
    """Stream ``chunks`` into ``uploads/<sha256[:24]><ext>``; 413 over the size limit, 507 over the quota."""
    settings = service.settings
    ext = extension_of(name)
    limit = settings.max_slide_bytes
    room = settings.upload_quota_bytes - service.uploads_bytes()
    tmp = service.uploads / f".upload-{uuid.uuid4().hex}.partial"
    h, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise JobError(413, f"slide larger than the limit of {limit} bytes")
                if size > room:
                    raise JobError(
                        507,
                        f"the upload quota ({settings.upload_quota_bytes} bytes) is used up; "
                        "delete old jobs' uploads or raise --upload-quota-gb",
                    )
                h.update(chunk)
                out.write(chunk)
        if size == 0:
            raise JobError(422, f"{name!r}: empty upload")
        digest = h.hexdigest()
        final = service.uploads / f"{digest[:24]}{ext}"  # named by its content: known only once written
        publish(tmp, final)
        return final, digest
    finally:
        tmp.unlink(missing_ok=True)


def resolve_import(service, relative: str) -> Path:  # noqa: ANN001
    """A file inside the operator's import folder; never anything outside it."""
    root = service.settings.import_dir
    if root is None:
        raise JobError(403, "no import folder is configured (acmil serve --import-dir DIR); upload the slide")
    root = Path(root).resolve()
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise JobError(422, "path must be a non-empty string relative to the import folder")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise JobError(403, f"{relative!r} is outside the import folder")
    if not candidate.is_file():
        raise JobError(404, f"{relative!r}: no such file in the import folder")
    extension_of(candidate.name)
    return candidate


def submit_existing(service, path: Path, source: str, client: str) -> tuple[dict, bool]:  # noqa: ANN001
    """Check, hash and queue a slide that is already on disk (import folder, watch folder)."""
    check_slide(path, path.name)
    return service.submit(path, path.name, file_hash(path), source, client)
