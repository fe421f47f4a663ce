"""The viewer's OpenSeadragon files: found in a checkout's node_modules, or fetched once into a user cache.

OpenSeadragon stays an npm dependency pinned by ``package-lock.json`` (version and ``integrity``); the lockfile
ships inside this package, so an installed wheel knows the pin without the repository. On first use the
pinned tarball is downloaded from the npm registry (``$ACMIL_NPM_REGISTRY``, default registry.npmjs.org),
checked against the lockfile's SRI hash, unpacked with every member checked (no path leaves the target, only
plain files and folders), and kept under ``<user cache>/acmil/viewer/openseadragon-<version>/``
(``$ACMIL_CACHE_DIR`` overrides the cache folder). Offline, :class:`AssetsMissing` says exactly what to run.

Public API:
    pin() -> Pin                              the lockfile's pin of OpenSeadragon
    find_assets(explicit) -> Path | None      a ready build folder, without the network
    ensure_assets(explicit, download) -> Path a ready build folder; downloads once; raises AssetsMissing
    prepare(explicit, report) -> Path | None  ensure_assets, saying what happens (``acmil serve``, ``acmil demo``)

Core, not ``acmil.service``: the demo fetches the files too, and only ``acmil serve`` imports the service.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PACKAGE = "openseadragon"
LOCKFILE = Path(__file__).resolve().parent / "package-lock.json"  # package data (the checkout's own lockfile)
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules" / PACKAGE / "build" / PACKAGE
DEFAULT_REGISTRY = "https://registry.npmjs.org"
BUILD_DIR = PurePosixPath("package/build/openseadragon")  # inside the npm tarball
MAX_TARBALL_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 20.0


class AssetsMissing(RuntimeError):
    """The OpenSeadragon files are not here and could not be fetched; the message says what to run."""


class IntegrityError(AssetsMissing):
    """A tarball whose hash is not the lockfile's: refused, nothing is unpacked."""


@dataclass(frozen=True)
class Pin:
    version: str
    integrity: str  # SRI, e.g. "sha512-<base64>"

    def tarball_url(self, registry: str | None = None) -> str:
        base = (registry or os.environ.get("ACMIL_NPM_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")
        return f"{base}/{PACKAGE}/-/{PACKAGE}-{self.version}.tgz"


def pin(lockfile: Path = LOCKFILE) -> Pin:
    """OpenSeadragon's version and integrity from ``package-lock.json`` (lockfileVersion 2 or 3)."""
    try:
        entry = json.loads(lockfile.read_text())["packages"][f"node_modules/{PACKAGE}"]
        return Pin(version=str(entry["version"]), integrity=str(entry["integrity"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AssetsMissing(f"{lockfile}: cannot read the pinned {PACKAGE} version and integrity ({err})") from err


def cache_dir() -> Path:
    """Where fetched viewer assets live: ``$ACMIL_CACHE_DIR/viewer`` or the platform's user cache."""
    root = os.environ.get("ACMIL_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("acmil")
    return Path(root) / "viewer"


def is_ready(directory: Path | None) -> bool:
    return directory is not None and (directory / "openseadragon.min.js").is_file()


def cached_build(p: Pin) -> Path:
    return cache_dir() / f"{PACKAGE}-{p.version}" / "build"


def find_assets(explicit: Path | None = None) -> Path | None:
    """A ready OpenSeadragon build folder: ``explicit`` when given (nothing else), else node_modules, else cache."""
    if explicit is not None:
        return explicit if is_ready(explicit) else None
    if is_ready(NODE_MODULES):
        return NODE_MODULES
    build = cached_build(pin())
    return build if is_ready(build) else None


def check_integrity(data: bytes, integrity: str, source: str) -> None:
    """Raise :class:`IntegrityError` unless ``data`` matches one of the SRI hashes in ``integrity``."""
    for token in integrity.split():
        algorithm, _, expected = token.partition("-")
        if algorithm in ("sha512", "sha384", "sha256"):
            actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
            if actual == expected:
                return
            raise IntegrityError(
                f"{source}: {algorithm} is {actual[:16]}…, package-lock.json pins "
                f"{expected[:16]}…: the file is not the pinned {PACKAGE}; refused, nothing unpacked"
            )
    raise IntegrityError(f"package-lock.json integrity {integrity!r} has no sha512/sha384/sha256 hash")


def unpack_build(data: bytes, target: Path) -> None:
    """Extract ``package/build/openseadragon/**`` of an npm tarball into ``target`` (created, must not exist).

    Every member is checked before anything is written: plain files and folders only (no links, devices),
    relative paths without ``..``; members outside the build folder are skipped.
    """
    members: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or "\\" in member.name:
                raise AssetsMissing(f"{PACKAGE} tarball: unsafe member path {member.name!r}; refused")
            if not (member.isfile() or member.isdir()):
                raise AssetsMissing(f"{PACKAGE} tarball: {member.name!r} is a link or special file; refused")
            if member.isfile() and BUILD_DIR in name.parents:
                members.append((member, name.relative_to(BUILD_DIR)))
        if not any(rel == PurePosixPath("openseadragon.min.js") for _, rel in members):
            raise AssetsMissing(f"{PACKAGE} tarball has no {BUILD_DIR}/openseadragon.min.js")
        target.mkdir(parents=True)
        root = target.resolve()
        for member, rel in members:
            path = (root / rel).resolve()
            if root not in path.parents:  # belt and braces after the checks above
                raise AssetsMissing(f"{PACKAGE} tarball: {member.name!r} leaves the target folder; refused")
            path.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            with path.open("wb") as out:
                shutil.copyfileobj(source, out)


def _download(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/octet-stream", "User-Agent": "acmil"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - https registry URL
        data = response.read(MAX_TARBALL_BYTES + 1)
    if len(data) > MAX_TARBALL_BYTES:
        raise AssetsMissing(f"{url}: larger than {MAX_TARBALL_BYTES} bytes; refused")
    return data


def how_to_fix(p: Pin, reason: str) -> str:
    """The message for a machine without the files: what went wrong and the exact commands that fix it."""
    tarball = cache_dir() / f"{PACKAGE}-{p.version}.tgz"
    return (
        f"the viewer's OpenSeadragon {p.version} files are missing ({reason}). Fix with one of: "
        f"(1) connect to the npm registry and restart `acmil serve` (it downloads them once into "
        f"{cache_dir()}); (2) on a machine online: `curl -fL -o {PACKAGE}-{p.version}.tgz {p.tarball_url()}`, "
        f"copy that file to {tarball} and restart `acmil serve` (its integrity is checked against "
        f"package-lock.json); (3) in a source checkout: `npm ci` in the repository root; "
        f"(4) `acmil serve --viewer-assets DIR` with DIR an OpenSeadragon build/openseadragon folder. "
        f"The REST API under /api/v1 works meanwhile."
    )


def ensure_assets(explicit: Path | None = None, download: bool = True, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """A ready OpenSeadragon build folder, fetching the pinned tarball into the cache if none is found.

    Args:
        explicit: a folder the user named (``--viewer-assets``): used as it is, never replaced by a download.
        download: allow the network (a tarball already placed in the cache folder is used either way).

    Raises:
        AssetsMissing: not found and not fetched (offline, bad integrity, unsafe tarball); says what to run.
    """
    found = find_assets(explicit)
    if found is not None:
        return found
    p = pin()
    if explicit is not None:
        raise AssetsMissing(
            how_to_fix(p, f"{explicit}/openseadragon.min.js not found").replace(
                "Fix with one of:",
                "Point --viewer-assets at an OpenSeadragon build/openseadragon folder, or drop it and fix with one of:",
            )
        )
    from filelock import FileLock

    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{PACKAGE}-{p.version}"
    with FileLock(str(cache / f"{PACKAGE}.lock"), timeout=120):  # one download when workers start together
        if is_ready(final / "build"):
            return final / "build"
        local = cache / f"{PACKAGE}-{p.version}.tgz"
        if local.is_file():
            data, source = local.read_bytes(), str(local)
        elif download:
            source = p.tarball_url()
            try:
                data = _download(source, timeout)
            except AssetsMissing:
                raise
            except Exception as err:  # noqa: BLE001 - URLError, timeouts, HTTP errors: all mean "not fetched"
                raise AssetsMissing(how_to_fix(p, f"download of {source} failed: {err}")) from err
        else:
            raise AssetsMissing(how_to_fix(p, "not in node_modules or the cache, and downloads are off"))
        try:
            check_integrity(data, p.integrity, source)
        except IntegrityError as err:
            raise IntegrityError(f"{err}. {how_to_fix(p, 'the tarball failed its check')}") from err
        work = Path(tempfile.mkdtemp(prefix=f".{PACKAGE}-", dir=cache))
        try:
            unpack_build(data, work / "build")
            if final.exists():
                shutil.rmtree(final)  # an incomplete earlier folder (no openseadragon.min.js)
            os.replace(work, final)  # the final name only ever holds a complete, verified build
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final / "build"


def prepare(explicit: Path | None = None, report: Callable[[str], None] = print) -> Path | None:
    """:func:`ensure_assets`, reporting a download before it starts and the outcome (or what to run) after."""
    if explicit is None and find_assets() is None:
        report(f"viewer: fetching OpenSeadragon {pin().version} from the npm registry into {cache_dir()} (once) ...")
    try:
        found = ensure_assets(explicit)
    except AssetsMissing as err:
        report(f"viewer: {err}")
        return None
    report(f"viewer: OpenSeadragon files in {found}")
    return found
