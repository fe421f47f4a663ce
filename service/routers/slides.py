"""Slide routes: the slide list and metadata, DeepZoom (slide and attention overlay), and tile crops."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from acmil.heatmap import DEFAULT_CMAP, DEFAULT_NORMALISATION, DEFAULT_SMOOTHING

from ..dependencies import BranchDep, EngineDep, ModelDep, SlideDep
from ..errors import NotFound, Unavailable
from ..schemas import SlideMetadata, SlideSummary

router = APIRouter(prefix="/slides", tags=["slides"])
_TILE = re.compile(r"([0-9]{1,6})_([0-9]{1,6})\.(jpeg|jpg|png)", re.ASCII)  # ASCII: no '٣' read as 3
CACHE_TILES = {"Cache-Control": "private, max-age=3600"}
XML = "application/xml"


def _address(tile: str, formats: tuple[str, ...]) -> tuple[int, int]:
    match = _TILE.fullmatch(tile)
    if not match or match.group(3) not in formats:
        raise NotFound(f"bad tile name {tile!r} (expected COL_ROW.{formats[0]})")
    return int(match.group(1)), int(match.group(2))


@router.get("", response_model=list[SlideSummary])
def list_slides(engine: EngineDep) -> list[SlideSummary]:
    """Slides that have a feature file, whether their image is present, and any problem with the file."""
    out = []
    entries = engine.registry.list()
    if engine.registry.problem:
        raise Unavailable(engine.registry.problem, retry_after_s=5)
    for entry in entries:
        n_tiles, error = engine.summary(entry)
        out.append(
            SlideSummary(slide_id=entry.slide_id, has_image=entry.image_path is not None, n_tiles=n_tiles, error=error)
        )
    return out


@router.get("/{slide_id}", response_model=SlideMetadata)
def slide_metadata(slide: SlideDep, engine: EngineDep) -> SlideMetadata:
    """Dimensions, µm/px, tiles and feature provenance of one slide."""
    return SlideMetadata(**engine.metadata(slide))


@router.get("/{slide_id}/slide.dzi", response_class=Response, responses={200: {"content": {XML: {}}}})
def slide_dzi(slide: SlideDep, engine: EngineDep) -> Response:
    """DeepZoom descriptor of the slide image (404 when the slide has no image)."""
    return Response(engine.images.dzi(slide), media_type=XML)


@router.get(
    "/{slide_id}/slide_files/{level}/{tile}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}}
)
def slide_tile(slide: SlideDep, engine: EngineDep, level: int, tile: str) -> Response:
    """One DeepZoom tile of the slide, ``COL_ROW.jpeg``."""
    col, row = _address(tile, ("jpeg", "jpg"))
    return Response(engine.images.tile(slide, level, col, row), media_type="image/jpeg", headers=CACHE_TILES)


Colormap = Annotated[str, Query(max_length=64, description="any matplotlib colormap name")]
Normalisation = Annotated[str, Query(pattern="^(log|rank|percentile|minmax)$")]
Smoothing = Annotated[float, Query(ge=0.0, le=20.0, description="Gaussian sigma in tiles")]


@router.get("/{slide_id}/attention.dzi", response_class=Response, responses={200: {"content": {XML: {}}}})
def attention_dzi(
    slide: SlideDep,
    engine: EngineDep,
    branch: BranchDep,
    model: ModelDep,
    colormap: Colormap = DEFAULT_CMAP,
    normalisation: Normalisation = DEFAULT_NORMALISATION,
    smoothing: Smoothing = DEFAULT_SMOOTHING,
) -> Response:
    """DeepZoom descriptor of the attention overlay: same size and tiling as ``slide.dzi``, PNG tiles.

    Tiles come from ``attention_files/{level}/{col}_{row}.png`` with the same query options. An ensemble's
    overlay is its members' mean attention, or member ``model=k``'s.
    """
    overlay = engine.overlay(slide, branch, colormap, normalisation, smoothing, model)
    return Response(overlay.get_dzi("png"), media_type=XML)


@router.get(
    "/{slide_id}/attention_files/{level}/{tile}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def attention_tile(
    slide: SlideDep,
    engine: EngineDep,
    branch: BranchDep,
    model: ModelDep,
    level: int,
    tile: str,
    colormap: Colormap = DEFAULT_CMAP,
    normalisation: Normalisation = DEFAULT_NORMALISATION,
    smoothing: Smoothing = DEFAULT_SMOOTHING,
) -> Response:
    """One RGBA overlay tile, transparent where there is no tissue tile; aligned with the slide's tiles."""
    col, row = _address(tile, ("png",))
    overlay = engine.overlay(slide, branch, colormap, normalisation, smoothing, model)
    return Response(engine.overlay_tile(overlay, level, col, row), media_type="image/png")


@router.get("/{slide_id}/crop.jpg", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def crop(
    slide: SlideDep,
    engine: EngineDep,
    x: Annotated[int, Query(ge=0)],
    y: Annotated[int, Query(ge=0)],
    size: Annotated[int, Query(ge=1, le=8192, description="side in level-0 pixels")],
    out: Annotated[int, Query(ge=8, le=1024, description="side of the returned image")] = 160,
) -> Response:
    """A square of the slide at level-0 (x, y), e.g. a top-attended tile for the gallery."""
    return Response(engine.images.crop(slide, x, y, size, out), media_type="image/jpeg", headers=CACHE_TILES)
