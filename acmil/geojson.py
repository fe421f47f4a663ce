"""GeoJSON out, in QuPath's dialect: attention per tile, tissue contours and tile grids, checked by a schema.

QuPath (0.4 and later; ``qupath-core`` ``QuPathTypeAdapters``) reads and writes each object as a GeoJSON
``Feature``:

- ``geometry``: a ``Polygon`` / ``MultiPolygon`` in level-0 pixel coordinates, origin at the top-left corner
  of the full-resolution image (x right, y down) — the coordinates of our feature files;
- ``id``: a UUID string; ours are derived from the slide id and tile index, so a re-export keeps its ids;
- ``properties.objectType``: ``"annotation"``, ``"detection"``, ``"tile"``, ``"cell"`` or ``"tmaCore"``;
- ``properties.classification``: ``{"name": "Tumor", "color": [r, g, b]}``;
- ``properties.measurements``: a mapping ``{"attention": 0.012, ...}`` (numbers only);
- ``properties.metadata``: a mapping of strings (QuPath 0.5 and later keep it).

QuPath 0.3 and earlier (``legacy=True``) wrote ``object_type`` instead of ``objectType``, always
``isLocked``, the classification as ``{"name": ..., "colorRGB": <packed signed ARGB int>}`` and the
measurements as a list ``[{"name": ..., "value": ...}]``; QuPath 0.4 and later still read that form.

Geometry comes from shapely (tile boxes, tissue contours repaired with ``make_valid``); this module never
builds polygons by hand. :func:`validate_geojson` checks a written file against the pydantic schema of
what we emit and that every polygon is valid (:mod:`acmil.geojson_schema`, whose names are re-exported here).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
import shapely.geometry

from acmil.atomic import atomic_path
from acmil.geojson_schema import OBJECT_TYPES as OBJECT_TYPES  # re-exported: the reading side lives there
from acmil.geojson_schema import FeatureCollection as FeatureCollection
from acmil.geojson_schema import tile_corners as tile_corners
from acmil.geojson_schema import validate_geojson as validate_geojson

TOP_CLASS = "Top attention"
TOP_COLOR = (220, 20, 60)  # crimson
TISSUE_CLASS = "Tissue"
TISSUE_COLOR = (0, 200, 0)  # the QC picture's green
_NAMESPACE = uuid.UUID("6f0d6c2e-6a4b-4d9a-9f55-2f5d3c6b9a10")  # fixed: ids are stable across exports
Color = tuple[int, int, int]


# --- geometry (shapely) -------------------------------------------------------------------------------
def tile_boxes(coords: np.ndarray, patch_size_level0: float) -> np.ndarray:
    """(N,) shapely boxes [x, x + p] x [y, y + p] of tiles; coords (N, 2) level-0 top-left corners."""
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    p = float(patch_size_level0)
    return shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + p, xy[:, 1] + p)


def _ring_lists(boxes: np.ndarray) -> list:
    """GeoJSON ``coordinates`` of N box polygons: (N, 1, 5, 2) nested lists, integers where integral."""
    pts = shapely.get_coordinates(boxes).reshape(len(boxes), 1, 5, 2)
    if np.all(pts == np.round(pts)):
        pts = pts.astype(np.int64)  # feature-file coordinates are integers: keep them exact and short
    return pts.tolist()


def geometry_mapping(geom: Any) -> dict:
    """GeoJSON geometry dict of a shapely Polygon or MultiPolygon (integers kept as integers)."""
    mapping = json.loads(shapely.to_geojson(geom))
    return _intify(mapping)


def _intify(value: Any) -> Any:
    if isinstance(value, list):
        return [_intify(v) for v in value]
    if isinstance(value, dict):
        return {k: _intify(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def mask_polygons(
    mask: np.ndarray, level0_size: tuple[int, int], min_piece_px: float = 4.0, min_hole_px: float = 16.0
) -> list:
    """Polygons (with holes) of a bool mask covering the whole slide, in level-0 pixels.

    cv2 traces each region and its holes (``RETR_CCOMP``) through the centres of their boundary pixels, so
    outlines lie half a mask pixel inside the mask's edge (2 µm on a 4 µm/px segmentation thumbnail).
    Pieces and holes whose traced area is under ``min_piece_px`` / ``min_hole_px`` mask pixels are left out
    (tissue segmentation already drops pieces under 0.01 mm² and fills holes under 0.005 mm², hundreds of
    pixels): a noisy mask's thousands of pinholes would make one polygon with thousands of rings, which
    GEOS repairs in minutes instead of a second. Self-touching outlines are repaired with ``make_valid``.

    Args:
        mask: (h, w) bool at any scale of the slide (the scale is ``level0_size`` / mask shape).
        level0_size: level-0 (width, height).

    Returns:
        Valid shapely Polygons, largest first.
    """
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    sx, sy = level0_size[0] / m.shape[1], level0_size[1] / m.shape[0]

    def ring(k: int, min_px: float) -> np.ndarray | None:
        if len(contours[k]) < 3 or abs(cv2.contourArea(contours[k])) < min_px:
            return None
        return (contours[k].reshape(-1, 2) + 0.5) * (sx, sy)  # pixel centres, in level-0 pixels

    pieces = []
    for i in np.flatnonzero(links[:, 3] < 0):  # outer outlines; their children are their holes
        shell, holes, child = ring(i, min_piece_px), [], links[i, 2]
        while shell is not None and child >= 0:
            if (hole := ring(child, min_hole_px)) is not None:
                holes.append(hole)
            child = links[child, 0]
        if shell is not None:
            pieces.append(shapely.Polygon(shell, holes))
    if not pieces:
        return []
    geoms = np.asarray(pieces, dtype=object)
    invalid = ~shapely.is_valid(geoms)
    geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    parts = [g for g in shapely.get_parts(geoms) if isinstance(g, shapely.Polygon) and g.area > 0]
    return sorted(parts, key=lambda g: -g.area)


# --- features -----------------------------------------------------------------------------------------
def feature_id(slide_id: str, kind: str, index: int) -> str:
    """A UUID fixed by (slide, kind, index): QuPath keeps ids, so re-exports replace rather than duplicate."""
    return str(uuid.uuid5(_NAMESPACE, f"{slide_id}/{kind}/{index}"))


def _packed_rgb(color: Color) -> int:
    """QuPath's ColorTools.packRGB as a signed 32-bit int (the pre-0.4 ``colorRGB``)."""
    value = (0xFF << 24) | (int(color[0]) << 16) | (int(color[1]) << 8) | int(color[2])
    return value - (1 << 32)


def classification(name: str, color: Color, legacy: bool = False) -> dict:
    """QuPath's classification object: ``{"name", "color": [r, g, b]}`` (legacy: ``colorRGB``)."""
    if legacy:
        return {"name": name, "colorRGB": _packed_rgb(color)}
    return {"name": name, "color": [int(c) for c in color]}


def object_properties(
    object_type: str,
    measurements: dict[str, float],
    legacy: bool,
    *,
    name: str | None = None,
    klass: dict | None = None,
    metadata: dict[str, str] | None = None,
) -> dict:
    props: dict[str, Any] = {("object_type" if legacy else "objectType"): object_type}
    if name is not None:
        props["name"] = name
    if klass is not None:
        props["classification"] = klass
    if legacy:
        props["isLocked"] = False
        props["measurements"] = [{"name": k, "value": v} for k, v in measurements.items()]
    else:
        props["measurements"] = measurements
    if metadata and not legacy:
        props["metadata"] = metadata
    return props


def feature_collection(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def attention_ranks(scores: np.ndarray) -> np.ndarray:
    """(N,) int rank of each tile's score, 1 = most attended (ties in tile order)."""
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")] = np.arange(1, len(scores) + 1)
    return ranks


def attention_features(
    slide_id: str,
    coords: np.ndarray,
    patch_size_level0: float,
    attention: np.ndarray,
    *,
    top_k: int = 10,
    object_type: Literal["detection", "tile"] = "detection",
    top_class: str = TOP_CLASS,
    top_color: Color = TOP_COLOR,
    legacy: bool = False,
    rows: Literal["branch", "model"] = "branch",
) -> dict:
    """A FeatureCollection of one Feature per tile, carrying its attention as QuPath measurements.

    Args:
        slide_id: names the ids and the ``metadata``.
        coords: (N, 2) level-0 (x, y) of each tile's top-left corner (the feature file's ``coords``).
        patch_size_level0: tile side in level-0 pixels (the feature file's ``patch_size_level0``).
        attention: (M, N) per-branch attention, or (N,) one branch.
        top_k: the ``top_k`` most attended tiles (mean over branches) get ``top_class``.
        object_type: QuPath object type of the tiles.
        legacy: write QuPath 0.3's form (see the module docstring).
        rows: what the M rows of ``attention`` are: branches of one model, or an ensemble's models (each
            one's mean over its branches), which names their measurements ``attention_model_<k>``.

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``; measurements per tile: ``attention`` (mean over
        rows), ``attention_branch_<m>`` or ``attention_model_<m>`` (when M > 1) and ``attention_rank`` (1 = most
        attended).
    """
    if object_type not in ("detection", "tile"):
        raise ValueError(f"object_type must be 'detection' or 'tile', got {object_type!r}")
    att = np.asarray(attention, dtype=np.float64)
    att = att[None] if att.ndim == 1 else att
    coords = np.asarray(coords).reshape(-1, 2)
    if att.ndim != 2 or att.shape[1] != len(coords):
        raise ValueError(f"{slide_id}: attention of shape {att.shape} does not match {len(coords)} tiles")
    if not np.isfinite(att).all():
        raise ValueError(f"{slide_id}: attention holds NaN or infinite values")
    mean = att.mean(axis=0)
    ranks = attention_ranks(mean)
    branches = att.tolist() if att.shape[0] > 1 else []
    mean_list, rank_list = mean.tolist(), ranks.tolist()
    top = classification(top_class, top_color, legacy) if top_k > 0 else None
    rings = _ring_lists(tile_boxes(coords, patch_size_level0))
    features = []
    for i, ring in enumerate(rings):
        measurements = {"attention": mean_list[i]}
        measurements |= {f"attention_{rows}_{m}": b[i] for m, b in enumerate(branches)}
        measurements["attention_rank"] = rank_list[i]
        props = object_properties(
            object_type,
            measurements,
            legacy,
            klass=top if rank_list[i] <= top_k else None,
            metadata={"tile_index": str(i)},
        )
        features.append(
            {
                "type": "Feature",
                "id": feature_id(slide_id, "tile", i),
                "geometry": {"type": "Polygon", "coordinates": ring},
                "properties": props,
            }
        )
    return feature_collection(features)


def tissue_features(
    slide_id: str,
    mask: np.ndarray | None,
    level0_size: tuple[int, int],
    coords: np.ndarray,
    patch_size_level0: float,
    *,
    mpp: float | None = None,
    tissue_fraction: np.ndarray | None = None,
    legacy: bool = False,
) -> dict:
    """Tissue contours (``annotation`` objects of class ``Tissue``, with holes) and the kept tile grid
    (``tile`` objects, measurement ``tissue_fraction``) of one slide, for review in QuPath.

    Args:
        mask: (h, w) bool tissue mask over the whole slide at any scale, or None (tiles only).
        level0_size: level-0 (width, height).
        coords: (N, 2) level-0 top-left corners of the kept tiles; patch_size_level0: their side.
        mpp: µm per level-0 pixel, for the ``area_mm2`` measurement of each tissue piece.
        tissue_fraction: (N,) tissue fraction of each tile, or None.
    """
    features = []
    pieces = mask_polygons(mask, level0_size) if mask is not None else []
    klass = classification(TISSUE_CLASS, TISSUE_COLOR, legacy)
    for i, piece in enumerate(pieces):
        measurements = {"area_mm2": piece.area * mpp * mpp / 1e6} if mpp else {}
        props = object_properties(
            "annotation", measurements, legacy, name=f"tissue {i + 1}", klass=klass, metadata={"slide_id": slide_id}
        )
        features.append(
            {
                "type": "Feature",
                "id": feature_id(slide_id, "tissue", i),
                "geometry": geometry_mapping(piece),
                "properties": props,
            }
        )
    coords = np.asarray(coords).reshape(-1, 2)
    fractions = None if tissue_fraction is None else np.asarray(tissue_fraction, dtype=np.float64).tolist()
    for i, ring in enumerate(_ring_lists(tile_boxes(coords, patch_size_level0))):
        measurements = {} if fractions is None else {"tissue_fraction": fractions[i]}
        props = object_properties("tile", measurements, legacy, metadata={"tile_index": str(i)})
        features.append(
            {
                "type": "Feature",
                "id": feature_id(slide_id, "tile", i),
                "geometry": {"type": "Polygon", "coordinates": ring},
                "properties": props,
            }
        )
    return feature_collection(features)


def write_geojson(path: str | os.PathLike, collection: dict) -> Path:
    """Write a FeatureCollection atomically, compact (100,000 tiles are ~25 MB)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(collection, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_attention_geojson(
    path: str | os.PathLike,
    slide_id: str,
    coords: np.ndarray,
    patch_size_level0: float,
    attention: np.ndarray,
    **options: Any,
) -> Path:
    """:func:`attention_features` written to ``path`` (what ``heatmap --format geojson`` and ``predict`` call)."""
    return write_geojson(path, attention_features(slide_id, coords, patch_size_level0, attention, **options))
