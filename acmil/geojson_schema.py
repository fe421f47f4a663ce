"""The schema of the GeoJSON that :mod:`acmil.geojson` writes (QuPath's dialect), and reading it back.

:func:`validate_geojson` checks a file or a parsed dict against the pydantic models below and that every
polygon is valid (shapely); :func:`tile_corners` recovers tile coordinates and sides from a collection. The
dialect itself (current and legacy QuPath forms) is described in :mod:`acmil.geojson`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import shapely
import shapely.geometry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

OBJECT_TYPES = ("annotation", "detection", "tile", "cell", "tmaCore")


# --- schema of what we emit ---------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Position = tuple[float, float]
Channel = Annotated[int, Field(ge=0, le=255)]


def _check_rings(rings: list[list[Position]]) -> list[list[Position]]:
    if not rings:
        raise ValueError("a polygon needs an exterior ring")
    for ring in rings:
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise ValueError("each ring needs >= 4 positions and must end where it starts")
    return rings


class PolygonGeometry(_Strict):
    type: Literal["Polygon"]
    coordinates: list[list[Position]]

    @field_validator("coordinates")
    @classmethod
    def _rings(cls, value: list) -> list:
        return _check_rings(value)


class MultiPolygonGeometry(_Strict):
    type: Literal["MultiPolygon"]
    coordinates: Annotated[list[list[list[Position]]], Field(min_length=1)]

    @field_validator("coordinates")
    @classmethod
    def _polygons(cls, value: list) -> list:
        return [_check_rings(p) for p in value]


class Classification(_Strict):
    name: Annotated[str, Field(min_length=1)]
    color: tuple[Channel, Channel, Channel]


class LegacyClassification(_Strict):
    name: Annotated[str, Field(min_length=1)]
    colorRGB: int


class Measurement(_Strict):
    name: str
    value: float


class Properties(_Strict):
    objectType: Literal[OBJECT_TYPES]  # type: ignore[valid-type]
    name: str | None = None
    classification: Classification | None = None
    measurements: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, str] | None = None


class LegacyProperties(_Strict):
    object_type: Literal["annotation", "detection", "tile", "cell", "tma_core"]
    name: str | None = None
    classification: LegacyClassification | None = None
    isLocked: bool
    measurements: list[Measurement] = Field(default_factory=list)


Geometry = Annotated[PolygonGeometry | MultiPolygonGeometry, Field(discriminator="type")]


class Feature(_Strict):
    type: Literal["Feature"]
    id: uuid.UUID
    geometry: Geometry
    properties: Properties


class LegacyFeature(Feature):
    properties: LegacyProperties  # type: ignore[assignment]


class FeatureCollection(_Strict):
    type: Literal["FeatureCollection"]
    features: list[Feature]


class LegacyFeatureCollection(_Strict):
    type: Literal["FeatureCollection"]
    features: list[LegacyFeature]


def validate_geojson(source: str | os.PathLike | dict, legacy: bool = False) -> FeatureCollection:
    """Check a FeatureCollection we wrote (a path or the parsed dict) against the schema above, and that
    every geometry is a valid polygon (shapely). Raises ValueError naming the file and the first problems."""
    name = "GeoJSON" if isinstance(source, dict) else str(source)
    try:
        data = source if isinstance(source, dict) else json.loads(Path(source).read_text(encoding="utf-8"))
        model = (LegacyFeatureCollection if legacy else FeatureCollection).model_validate(data)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{name}: cannot read as JSON ({err})") from err
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
        raise ValueError(f"{name}: not QuPath GeoJSON as this project writes it ({problems})") from err
    geoms = (
        shapely.from_geojson([json.dumps(f.geometry.model_dump()) for f in model.features])
        if model.features
        else np.array([])
    )
    bad = [i for i, ok in enumerate(shapely.is_valid(geoms)) if not ok]
    if bad:
        reason = shapely.is_valid_reason(geoms[bad[0]])
        raise ValueError(f"{name}: {len(bad)} invalid polygon(s), first feature #{bad[0]}: {reason}")
    return model


def tile_corners(collection: FeatureCollection | dict, object_types: Sequence[str] = ("detection", "tile")) -> tuple:
    """(coords (N, 2) int64, sides (N,) float) of the square tiles of a collection: the inverse of the export."""
    data = collection.model_dump() if isinstance(collection, BaseModel) else collection
    out = []
    for f in data["features"]:
        props = f.get("properties") or {}
        if props.get("objectType", props.get("object_type")) in object_types:
            x0, y0, x1, y1 = shapely.geometry.shape(f["geometry"]).bounds
            out.append((x0, y0, x1 - x0))
    arr = np.asarray(out, dtype=np.float64).reshape(-1, 3)
    return np.rint(arr[:, :2]).astype(np.int64), arr[:, 2]
