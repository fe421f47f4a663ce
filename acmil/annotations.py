"""Pathologists' annotations in: GeoJSON as QuPath exports it, turned into regions and exact tile coverage.

Accepted files (``<slide_id>.geojson`` or ``.json``, also ``<slide_id>.<slide ext>.geojson`` as QuPath names
exports after the image): a ``FeatureCollection``, a bare list of ``Feature`` s (``exportObjectsToGeoJson``
without ``FEATURE_COLLECTION``), one ``Feature`` or one geometry. Of each feature we keep its geometry
(``Polygon``, ``MultiPolygon``, or the polygons of a ``GeometryCollection``), object type (``objectType``; QuPath
0.3's ``object_type``; QuPath 0.2's type-in-``id``; no type = annotation, as QuPath reads it), classification
(``{"name"}``, ``{"names"}`` of a derived class, or a plain string) and measurements (mapping or list).

Problems are per file: :class:`AnnotationError` for a file that cannot be used (unreadable, not JSON, not
GeoJSON, an unknown geometry type, bad coordinates, nothing inside the slide), warnings for what was
repaired or dropped (self-intersecting polygons repaired with shapely's ``make_valid``, parts beyond the
slide clipped, points and lines without area ignored).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from shapely.errors import GEOSException

from acmil.geojson import tile_boxes
from acmil.geometry import SLIDE_EXTENSIONS

GEOJSON_SUFFIXES = (".geojson", ".json")
AREA_TYPES = {"Polygon", "MultiPolygon", "GeometryCollection"}
NO_AREA_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString"}
LEGACY_TYPE_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathTileObject": "tile",
    "PathCellObject": "cell",
    "TMACoreObject": "tmaCore",
    "PathRootObject": "root",
}
ANY_CLASS = "*"


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Annotation:
    """One polygonal object of a file.

    Attributes:
        geometry: valid shapely Polygon or MultiPolygon, level-0 pixels.
        object_type: QuPath object type ("annotation", "detection", "tile", ...).
        class_names: the classification's parts, e.g. ("Tumor",) or ("Tumor", "Positive"); () unclassified.
        index: position of the feature in the file (0-based).
    """

    geometry: Any
    object_type: str = "annotation"
    class_names: tuple[str, ...] = ()
    color: tuple[int, int, int] | None = None
    name: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    index: int = 0

    @property
    def classification(self) -> str | None:
        """QuPath's display form of the class ("Tumor", "Tumor: Positive"), or None."""
        return ": ".join(self.class_names) if self.class_names else None

    def matches(self, classes: Iterable[str]) -> bool:
        """Whether any of ``classes`` names this object's class or a part of it (case-insensitive; "*" = any)."""
        wanted = {c.strip().casefold() for c in classes}
        if ANY_CLASS in wanted:
            return True
        mine = {n.casefold() for n in self.class_names}
        if self.classification:
            mine.add(self.classification.casefold())
        return bool(mine & wanted)


@dataclass
class AnnotationSet:
    """The usable objects of one file and what was repaired or dropped on the way."""

    source: str
    annotations: list[Annotation]
    warnings: list[str] = field(default_factory=list)
    digest: str = ""  # sha256 of the file's bytes (provenance, resume)

    def select(
        self, classes: Iterable[str] | None = None, object_types: Sequence[str] | None = ("annotation",)
    ) -> list[Annotation]:
        """Objects of the given types (None = all) whose class matches ``classes`` (None = any class)."""
        classes = list(classes) if classes is not None else None
        return [
            a
            for a in self.annotations
            if (object_types is None or a.object_type in object_types) and (classes is None or a.matches(classes))
        ]

    def region(self, classes: Iterable[str] | None = None, object_types: Sequence[str] | None = ("annotation",)):
        """Union of the selected objects (overlaps counted once), or an empty polygon."""
        geoms = [a.geometry for a in self.select(classes, object_types)]
        return shapely.union_all(geoms) if geoms else shapely.Polygon()

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.annotations:
            key = a.classification or "(unclassified)"
            counts[key] = counts.get(key, 0) + 1
        return counts


def find_annotation_file(directory: str | os.PathLike, slide_id: str) -> Path | None:
    """``<slide_id>.geojson`` / ``.json`` (or ``<slide_id>.svs.geojson`` …) in ``directory``, or None."""
    directory = Path(directory)
    names = [f"{slide_id}{s}" for s in GEOJSON_SUFFIXES]
    names += [f"{slide_id}{ext}{s}" for ext in sorted(SLIDE_EXTENSIONS) for s in GEOJSON_SUFFIXES]
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def read_annotations(path: str | os.PathLike, level0_size: tuple[int, int] | None = None) -> AnnotationSet:
    """Parse one GeoJSON file; ``level0_size`` (width, height) enables the inside-the-slide check."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read annotations ({err.strerror or err})") from err
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{path}: not a GeoJSON file (not valid UTF-8 JSON: {err})") from err
    result = parse_geojson(data, str(path), level0_size)
    result.digest = hashlib.sha256(raw).hexdigest()
    return result


def _features(data: Any, source: str) -> list[dict]:
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features")
        if not isinstance(items, list):
            raise AnnotationError(f"{source}: FeatureCollection without a 'features' list")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    elif isinstance(data, dict) and data.get("type") in AREA_TYPES | NO_AREA_TYPES:
        items = [{"type": "Feature", "geometry": data, "properties": {}}]  # a bare geometry
    else:
        what = f"an object with type {data.get('type')!r}" if isinstance(data, dict) else type(data).__name__
        raise AnnotationError(
            f"{source}: not GeoJSON: expected a FeatureCollection, a list of Features, a Feature "
            f"or a geometry, got {what}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "Feature" or not isinstance(item.get("geometry"), dict):
            raise AnnotationError(f"{source}: item #{i} is not a GeoJSON Feature with a geometry")
    return items


def _object_type(feature: dict, props: dict) -> str:
    kind = props.get("objectType", props.get("object_type", props.get("type")))
    if kind is None and feature.get("id") in LEGACY_TYPE_IDS:  # QuPath 0.2 put the type in "id"
        return LEGACY_TYPE_IDS[feature["id"]]
    kind = str(kind or "annotation")
    return {"tma_core": "tmaCore"}.get(kind, kind)


def _classification(props: dict) -> tuple[tuple[str, ...], tuple[int, int, int] | None]:
    value = props.get("classification")
    if value is None:
        return (), None
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(":") if p.strip()), None
    if not isinstance(value, dict):
        return (), None
    names = value.get("names") or ([value["name"]] if value.get("name") else [])
    color = value.get("color")
    rgb = None
    if isinstance(color, list) and len(color) >= 3 and all(isinstance(c, (int, float)) for c in color[:3]):
        rgb = tuple(int(c) for c in color[:3])
    elif isinstance(value.get("colorRGB"), int):  # before QuPath 0.4: packed ARGB
        packed = value["colorRGB"] & 0xFFFFFF
        rgb = (packed >> 16 & 255, packed >> 8 & 255, packed & 255)
    return tuple(str(n) for n in names), rgb


def _measurements(props: dict) -> dict[str, float]:
    value = props.get("measurements")
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):  # before QuPath 0.4: [{"name": ..., "value": ...}]
        items = [(m.get("name"), m.get("value")) for m in value if isinstance(m, dict)]
    else:
        return {}
    out = {}
    for k, v in items:
        try:
            number = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):  # QuPath writes NaN as "NaN"; JSON (and we) have no such number
            out[str(k)] = number
    return out


def _label(i: int, class_names: tuple[str, ...], name: str | None) -> str:
    what = ": ".join(class_names) or "unclassified"
    return f"feature #{i} ({what}{', ' + repr(name) if name else ''})"


def _polygonal(geom: Any) -> Any:
    """The polygons of a geometry (make_valid may return lines and points alongside them)."""
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, (shapely.Polygon, shapely.MultiPolygon))]
    parts = [p for p in parts if not p.is_empty and p.area > 0]
    return shapely.union_all(parts) if parts else None


def _geometry(geom_dict: dict, label: str, source: str, warnings: list[str]) -> Any | None:
    kind = geom_dict.get("type")
    if kind in NO_AREA_TYPES:
        warnings.append(f"{label}: {kind} has no area, ignored")
        return None
    if kind not in AREA_TYPES:
        raise AnnotationError(f"{source}: {label}: unknown geometry type {kind!r} (expected Polygon or MultiPolygon)")
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates: reported just below, not as a numpy warning
            geom = shapely.geometry.shape(geom_dict)
    except (GEOSException, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise AnnotationError(f"{source}: {label}: malformed {kind} coordinates ({err})") from err
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise AnnotationError(f"{source}: {label}: coordinates are not all finite numbers")
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        geom = shapely.make_valid(geom)
        warnings.append(f"{label}: invalid {kind} ({reason}) repaired with make_valid")
    poly = _polygonal(geom)
    if poly is None:
        warnings.append(f"{label}: {kind} encloses no area, ignored")
    return poly


def parse_geojson(data: Any, source: str = "GeoJSON", level0_size: tuple[int, int] | None = None) -> AnnotationSet:
    """The polygonal objects of parsed GeoJSON (see the module docstring for what is accepted)."""
    warnings: list[str] = []
    annotations: list[Annotation] = []
    slide_box = shapely.box(0, 0, *level0_size) if level0_size else None
    n_outside = 0
    for i, feature in enumerate(_features(data, source)):
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise AnnotationError(f"{source}: feature #{i}: 'properties' is not an object")
        class_names, color = _classification(props)
        name = props.get("name") if isinstance(props.get("name"), str) else None
        label = _label(i, class_names, name)
        geom = _geometry(feature["geometry"], label, source, warnings)
        if geom is None:
            continue
        if slide_box is not None and not slide_box.covers(geom):
            clipped = _polygonal(geom.intersection(slide_box))
            if clipped is None:
                n_outside += 1
                warnings.append(
                    f"{label}: lies entirely outside the slide ({level0_size[0]} x {level0_size[1]} px), ignored"
                )
                continue
            share = 1 - clipped.area / geom.area
            warnings.append(
                f"{label}: {share:.1%} of its area lies outside the slide "
                f"({level0_size[0]} x {level0_size[1]} px), clipped"
            )
            geom = clipped
        annotations.append(
            Annotation(geom, _object_type(feature, props), class_names, color, name, _measurements(props), i)
        )
    if n_outside and not annotations:
        raise AnnotationError(
            f"{source}: all {n_outside} polygon(s) lie outside the slide ({level0_size[0]} x "
            f"{level0_size[1]} px): another slide's file, or not level-0 pixel coordinates?"
        )
    return AnnotationSet(source, annotations, warnings)


def tile_coverage(coords: np.ndarray, patch_size_level0: float, region: Any) -> np.ndarray:
    """Exact fraction of each tile's area inside ``region`` (a shapely geometry), (N,) float64 in [0, 1].

    An STRtree over the tiles finds those the region's parts touch; tiles wholly inside count 1 without
    computing an intersection, the rest get the area of their intersection.
    """
    boxes = tile_boxes(coords, patch_size_level0)
    out = np.zeros(len(boxes), dtype=np.float64)
    if region is None or region.is_empty or not len(boxes):
        return out
    tree = shapely.STRtree(boxes)
    tile_area = float(patch_size_level0) ** 2
    for part in shapely.get_parts(shapely.union_all(region)):  # disjoint parts: fractions add up
        idx = tree.query(part, predicate="intersects")
        if not len(idx):
            continue
        shapely.prepare(part)
        inside = shapely.contains_properly(part, boxes[idx])
        out[idx[inside]] += 1.0
        edge = idx[~inside]
        out[edge] += shapely.area(shapely.intersection(boxes[edge], part)) / tile_area
    return np.clip(out, 0.0, 1.0)


def parse_classes(value: str | Sequence[str] | None) -> list[str]:
    """``"Pen,Artifact"`` or ``["Pen", "Artifact"]`` -> ["Pen", "Artifact"] (blank items dropped)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    return [s.strip() for s in items if s.strip()]


def _default_color(name: str) -> tuple[int, int, int]:
    """A stable colour for a class given without one (QuPath reads a classification only with a colour)."""
    digest = hashlib.sha256(name.encode()).digest()
    return (64 + digest[0] % 160, 64 + digest[1] % 160, 64 + digest[2] % 160)


def to_feature_collection(found: AnnotationSet, slide_id: str) -> dict:
    """The usable objects of a file as QuPath GeoJSON again: repaired, clipped to the slide, ids fixed."""
    from acmil.geojson import classification, feature_collection, feature_id, geometry_mapping, object_properties

    features = []
    for a in found.annotations:
        klass = None
        if a.class_names:
            name = a.classification
            klass = classification(name, a.color or _default_color(name))
        object_type = (
            a.object_type if a.object_type in ("annotation", "detection", "tile", "cell", "tmaCore") else "annotation"
        )
        props = object_properties(object_type, dict(a.measurements), False, name=a.name, klass=klass)
        features.append(
            {
                "type": "Feature",
                "id": feature_id(slide_id, "annotation", a.index),
                "geometry": geometry_mapping(a.geometry),
                "properties": props,
            }
        )
    return feature_collection(features)
