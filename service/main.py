"""The FastAPI application: ``create_app(settings)`` wires settings, the model, routers and guards.

The checkpoint is loaded once, in the lifespan (not at import), and lives on ``app.state.engine``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from acmil.ensemble import Ensemble, load_ensemble

from . import jobs_app
from .config import Settings, get_settings
from .engine import Engine
from .errors import ServiceError
from .registry import SlideRegistry
from .routers import geojson, predict, slides, viewer
from .security import ApiKeyMiddleware, SlowBodyMiddleware, UploadLimitMiddleware, install_log_redaction

API_PREFIX = "/api/v1"
log = logging.getLogger("uvicorn.error")  # shows with uvicorn's own start-up lines


def load_checkpoint(settings: Settings) -> Ensemble:
    """The settings' checkpoint(s), loaded on their device as one :class:`~acmil.ensemble.Ensemble` (of one
    model when one is given). Raises with a one-line message when they cannot be loaded or averaged."""
    return load_ensemble(settings.checkpoint, map_location=_device(settings.device)).to(settings.device)


def create_app(settings: Settings | None = None, loaded: Ensemble | None = None) -> FastAPI:
    """Build the app. ``settings`` default to the environment (``ACMIL_*``), see :class:`Settings`.

    ``loaded``: the model, when the caller has loaded it already (``acmil serve`` does, to report a bad
    checkpoint or device in one line before uvicorn starts); else the lifespan loads it.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()  # here, not at import: uvicorn configures its loggers before the lifespan
        model = loaded or load_checkpoint(settings)
        registry = SlideRegistry(settings.features_dir, settings.slides_dir)
        with_image = sum(entry.image_path is not None for entry in registry.list())
        log.info(
            "model %s (%s, classes %s); %d slides in %s, %d with an image",
            " + ".join(m.path.name if m.path else "?" for m in model.members),
            model.card.arch,
            ", ".join(model.card.class_names),
            len(registry),
            settings.features_dir,
            with_image,
        )
        engine = app.state.engine = Engine(model, registry, settings)
        stop = threading.Event()
        warmer = threading.Thread(target=engine.warm, args=(stop,), name="acmil-precompute", daemon=True)
        if settings.precompute:
            warmer.start()
        try:
            yield
        finally:
            stop.set()
            if warmer.is_alive():
                warmer.join(timeout=30)
            engine.images.close()
            del app.state.engine

    app = FastAPI(
        title="ACMIL slide service",
        summary="Whole-slide predictions with attention heatmaps, and a DeepZoom viewer",
        version=_version(),
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.include_router(predict.router, prefix=API_PREFIX)
    app.include_router(slides.router, prefix=API_PREFIX)
    app.include_router(geojson.router, prefix=API_PREFIX)  # attention and annotations for QuPath
    jobs_app.install(app, settings, API_PREFIX)  # POST /slides, /jobs: new slides as jobs
    app.include_router(viewer.router)
    viewer.mount_assets(app, settings.viewer_assets_dir)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        retry = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry)} if retry else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    # Added last = outermost: CORS answers preflights before the key check (browsers send no key there).
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SlowBodyMiddleware, idle_timeout_s=settings.body_idle_timeout_s, min_rate=settings.body_min_rate)
    if settings.api_key is not None and settings.api_key.get_secret_value():
        app.add_middleware(
            ApiKeyMiddleware, api_key=settings.api_key.get_secret_value(), header=settings.api_key_header
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[settings.api_key_header, "Content-Type"],
        )
    return app


def _device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    torch.device(name)  # raises a clear error for a malformed name
    return name


def _version() -> str:
    from acmil import __version__

    return __version__
