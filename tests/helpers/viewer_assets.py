"""A local npm registry for the viewer-asset tests, and the genuine OpenSeadragon tarball it serves."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from acmil import viewer_assets as assets


def npm_cache_copy(integrity: str) -> Path | None:
    """The tarball in npm's own content cache (~/.npm/_cacache), found by its sha512, if ``npm ci`` put it there."""
    algorithm, _, digest = integrity.partition("-")
    hexdigest = base64.b64decode(digest).hex()
    root = Path(os.environ.get("npm_config_cache") or Path.home() / ".npm") / "_cacache" / "content-v2" / algorithm
    path = root / hexdigest[:2] / hexdigest[2:4] / hexdigest[4:]
    return path if path.is_file() else None


def genuine_tarball() -> bytes:
    """The pinned OpenSeadragon tarball: from npm's cache, else the public registry (skips when neither works)."""
    pin = assets.pin()
    cached = npm_cache_copy(pin.integrity)
    if cached is not None:
        return cached.read_bytes()
    try:
        return assets._download(pin.tarball_url(assets.DEFAULT_REGISTRY), timeout=30)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"cannot obtain the genuine {pin.tarball_url(assets.DEFAULT_REGISTRY)} ({err})")


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@contextmanager
def local_registry(files: dict[str, bytes]):
    """An HTTP server on a loopback port answering ``files`` (URL path -> bytes), 404 otherwise; yields its URL
    and the list of paths requested."""
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requested.append(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def tarball_path() -> str:
    """The URL path of the pinned tarball on a registry (``/openseadragon/-/openseadragon-<v>.tgz``)."""
    return assets.pin().tarball_url("http://x").removeprefix("http://x")
