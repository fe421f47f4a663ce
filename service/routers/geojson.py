"""GeoJSON routes, for QuPath and the viewer: a slide's attention per tile, and its annotations.

- ``GET /slides/{id}/attention.geojson``: one QuPath detection per tile of the feature file, attention as
  measurements, the ``top_k`` most attended tiles classified "Top attention" (:mod:`acmil.geojson`);
  downloaded as ``<id>_attention.geojson`` to drag onto the slide in QuPath.
- ``GET /slides/{id}/annotations.geojson``: the pathologists' annotations of the slide, when the service
  was started with ``--annotations DIR`` (``DIR/<id>.geojson``, as QuPath exports them), repaired and
  clipped to the slide; warnings about the file come in the ``X-Annotation-Warnings`` header (JSON list).
- ``GET /annotations``: ``{"enabled": bool, "slide_ids": [...]}``, so the viewer asks only for files that exist.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..caches import LockedLRU
from ..dependencies import EngineDep, ModelDep, SettingsDep, SlideDep
from ..engine import Engine
from ..errors import BadInput, NotFound, ServiceError
from ..registry import SlideEntry

router = APIRouter(tags=["geojson"])
GEOJSON = "application/geo+json"
AS_GEOJSON = {"response_class": Response, "responses": {200: {"content": {GEOJSON: {}}}}}
_attention_cache = LockedLRU(2)  # serialised collections: 100,000 tiles take ~2 s to build and ~45 MB


def _download(filename: str) -> dict[str, str]:
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"}


def _dumps(collection: dict) -> bytes:
    return json.dumps(collection, separators=(",", ":"), allow_nan=False).encode()


def _level0_size(slide: SlideEntry, engine: Engine) -> tuple[int, int] | None:
    """The slide image's size, else the one its feature file records, else None (no inside-the-slide check)."""
    from acmil.features import FeatureFileError, read_meta

    try:
        size = engine.images.dimensions(slide)
    except ServiceError:  # a broken image: the feature file may still know
        size = None
    if size is None:
        try:
            attrs = read_meta(slide.features_path).coord_attrs
        except (FeatureFileError, OSError):
            return None
        w, h = attrs.get("level0_width"), attrs.get("level0_height")
        size = (int(w), int(h)) if w and h else None
    return size


@router.get("/slides/{slide_id}/attention.geojson", **AS_GEOJSON)
def attention_geojson(
    slide: SlideDep,
    engine: EngineDep,
    model: ModelDep,
    top_k: Annotated[int, Query(ge=0, le=1_000_000, description="tiles classified 'Top attention'")] = 10,
    object_type: Annotated[Literal["detection", "tile"], Query(description="QuPath object type")] = "detection",
    legacy: Annotated[bool, Query(description="QuPath 0.3 form (measurements as a list)")] = False,
) -> Response:
    """Attention of every tile as QuPath GeoJSON (level-0 pixel polygons of the feature file's tiles).

    An ensemble's tiles carry ``attention`` (the members' mean) and ``attention_model_<k>``; ``model=k``
    gives member k's alone, with its branches.
    """
    from acmil.geojson import attention_features

    result, _ = engine.predict(slide)
    patch, _ = result.geometry()
    members = result.members or [result.prediction]
    if model is not None:
        result.scores(None, model)  # the range check, with its message
    per_model = len(members) > 1 and model is None
    attention = np.stack([m.mean_attention for m in members]) if per_model else members[model or 0].attention
    key = (result.key, model, top_k, object_type, legacy)
    body = _attention_cache.get(key)
    if body is None:
        try:
            collection = attention_features(
                slide.slide_id,
                result.coords,
                patch,
                attention,
                top_k=top_k,
                object_type=object_type,
                legacy=legacy,
                rows="model" if per_model else "branch",
            )
        except ValueError as err:
            raise BadInput(f"slide {slide.slide_id!r}: {err}") from err
        body = _dumps(collection)
        _attention_cache.put(key, body)
    return Response(body, media_type=GEOJSON, headers=_download(f"{slide.slide_id}_attention.geojson"))


@router.get("/annotations")
def annotations_index(engine: EngineDep, settings: SettingsDep) -> dict:
    """Whether the service serves annotations (``--annotations DIR``), and the slides that have a file."""
    from acmil.annotations import find_annotation_file

    folder = settings.annotations_dir
    if folder is None:
        return {"enabled": False, "slide_ids": []}
    ids = [e.slide_id for e in engine.registry.list() if find_annotation_file(folder, e.slide_id) is not None]
    return {"enabled": True, "slide_ids": ids}


@router.get("/slides/{slide_id}/annotations.geojson", **AS_GEOJSON)
def annotations_geojson(slide: SlideDep, engine: EngineDep, settings: SettingsDep) -> Response:
    """The slide's annotations (404 without ``--annotations`` or without a file; 422 for an unusable file)."""
    from acmil.annotations import AnnotationError, find_annotation_file, read_annotations, to_feature_collection

    folder = settings.annotations_dir
    if folder is None:
        raise NotFound("no annotations folder configured (start the service with --annotations DIR)")
    path = find_annotation_file(folder, slide.slide_id)
    if path is None:
        raise NotFound(f"slide {slide.slide_id!r} has no annotations file ({slide.slide_id}.geojson)")
    try:
        found = read_annotations(path, _level0_size(slide, engine))
    except AnnotationError as err:  # name the file, never the server's folders
        raise BadInput(str(err).replace(str(path), path.name)) from err
    warnings = [w.replace(str(path), path.name) for w in found.warnings][:20]
    headers = {"X-Annotation-Warnings": json.dumps(warnings), "Cache-Control": "no-cache"}
    return Response(_dumps(to_feature_collection(found, slide.slide_id)), media_type=GEOJSON, headers=headers)
