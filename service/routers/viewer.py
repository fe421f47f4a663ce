"""The viewer: ``GET /`` serves the single-page app; its assets are mounted by :func:`mount_assets`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..dependencies import SettingsDep

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
router = APIRouter(tags=["viewer"])

_MISSING = """<!doctype html><html><head><meta charset="utf-8"><title>ACMIL viewer: assets missing</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>The viewer's OpenSeadragon files are missing</h1>
<p>Expected them in <code>{path}</code>.</p>
<p>Run <code>npm install</code> in the repository root (it reads <code>package.json</code>), or point
<code>ACMIL_VIEWER_ASSETS_DIR</code> at an OpenSeadragon <code>build/openseadragon</code> folder,
then restart <code>acmil serve</code>. The REST API under <a href="/docs">/api/v1</a> works meanwhile.</p>
</body></html>"""


def assets_ready(assets_dir: Path) -> bool:
    return (assets_dir / "openseadragon.min.js").is_file()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(settings: SettingsDep):
    """The viewer page, or a 503 page that says how to install the missing browser assets."""
    if not assets_ready(settings.viewer_assets_dir):
        return HTMLResponse(_MISSING.format(path=settings.viewer_assets_dir), status_code=503)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def mount_assets(app: FastAPI, assets_dir: Path) -> None:
    """Serve ``service/static`` at /static and OpenSeadragon's build folder at /vendor/openseadragon."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/vendor/openseadragon", StaticFiles(directory=assets_dir, check_dir=False), name="openseadragon")
