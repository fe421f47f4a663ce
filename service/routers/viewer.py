"""The viewer: ``GET /`` serves the single-page app; its assets are mounted by :func:`mount_assets`.

OpenSeadragon's files come from :mod:`acmil.viewer_assets` (node_modules, or the user cache, fetched once
from the npm registry); until they are there, ``/`` answers a 503 page and ``/vendor/openseadragon/*`` a 503
text, both saying what to run.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from acmil import viewer_assets as assets

from ..config import DEFAULT_ASSETS

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
router = APIRouter(tags=["viewer"])
log = logging.getLogger("uvicorn.error")  # shows with uvicorn's own lines

_MISSING = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ACMIL viewer: assets missing</title>
</head><body style="font-family:sans-serif;max-width:48em;margin:3em auto;line-height:1.45">
<h1>The viewer's OpenSeadragon files are missing</h1>
<p>{message}</p>
<p>The REST API works meanwhile: <a href="/api/v1/docs">/api/v1/docs</a>.</p>
</body></html>"""


def assets_ready(assets_dir: Path) -> bool:
    return assets.is_ready(assets_dir)


class ViewerAssets:
    """Where this app's OpenSeadragon files are, resolved on first need (and fetched once if allowed).

    ``configured`` is the settings' folder: the default (the checkout's node_modules) means "find or fetch";
    any other folder was named by the user and is used as it is.
    """

    def __init__(self, configured: Path | None = None, download: bool = True) -> None:
        self.explicit = None if configured is None or Path(configured) == DEFAULT_ASSETS else Path(configured)
        self.download = download
        self.problem: str | None = None
        self._directory: Path | None = None
        self._lock = threading.Lock()

    @property
    def resolved(self) -> Path | None:
        """The folder if already found, without looking."""
        return self._directory

    def directory(self) -> Path | None:
        """The build folder, or None (then :attr:`problem` says why and what to run)."""
        if self._directory is not None:
            return self._directory
        with self._lock:
            if self._directory is None:
                tried_download = self.download
                try:
                    self._directory = assets.ensure_assets(self.explicit, download=self.download)
                    self.problem = None
                    log.info("viewer: OpenSeadragon from %s", self._directory)
                except assets.AssetsMissing as err:
                    if self.problem is None or tried_download:  # a later look without the network keeps the reason
                        log.warning("viewer: %s", err)
                        self.problem = str(err)
                    self.download = False  # one failed download per process; a placed tarball is still found
        return self._directory


def prepare_assets(configured: Path | None, report: Callable[[str], None] = print) -> Path | None:
    """Find or fetch the viewer's files before serving, and say what happened (``acmil serve``)."""
    return assets.prepare(ViewerAssets(configured).explicit, report)


def _message_html(message: str) -> str:
    """Escaped text with `backticked` commands as <code>."""
    parts = re.split(r"`([^`]*)`", html.escape(message))
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request):
    """The viewer page, or a 503 page that says how to get the missing browser assets."""
    viewer_assets: ViewerAssets = request.app.state.viewer_assets
    if viewer_assets.directory() is None:
        return HTMLResponse(_MISSING.format(message=_message_html(viewer_assets.problem or "")), status_code=503)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


class _VendorFiles:
    """ASGI app for /vendor/openseadragon: StaticFiles over the resolved folder, a 503 text while missing."""

    def __init__(self, viewer_assets: ViewerAssets) -> None:
        self.viewer_assets = viewer_assets
        self._static: StaticFiles | None = None

    async def __call__(self, scope, receive, send) -> None:
        from starlette.concurrency import run_in_threadpool

        # Resolving may download (first use): off the event loop.
        directory = self.viewer_assets.resolved or await run_in_threadpool(self.viewer_assets.directory)
        if directory is None:
            response = PlainTextResponse(self.viewer_assets.problem or "viewer assets missing", status_code=503)
            await response(scope, receive, send)
            return
        if self._static is None:
            self._static = StaticFiles(directory=directory)
        await self._static(scope, receive, send)


def mount_assets(app: FastAPI, assets_dir: Path) -> None:
    """Serve ``service/static`` at /static and OpenSeadragon's build folder at /vendor/openseadragon."""
    app.state.viewer_assets = ViewerAssets(assets_dir)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/vendor/openseadragon", _VendorFiles(app.state.viewer_assets), name="openseadragon")
