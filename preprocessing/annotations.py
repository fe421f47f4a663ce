"""Tile selection by pathologists' annotations (QuPath GeoJSON): keep tiles inside regions of interest,
drop tiles touching excluded classes (pen marks, artefacts), and record what was done in the feature file.

    acmil preprocess ... --annotations DIR [--roi-classes Tumor] [--exclude-classes Pen,Artifact]
                         [--roi-min-overlap 0.5]

``DIR/<slide_id>.geojson`` (see :mod:`acmil.annotations` for the accepted forms). A tile is kept when at least
``--roi-min-overlap`` of its area lies inside annotations of the ROI classes (when given), and none of it
(no area; a shared edge is not a touch) lies inside annotations of the excluded classes. With ROI classes
a slide without an annotation file fails (nothing would say where to tile); with only exclusions it is
tiled as usual. The file's sha256 and the settings join the slide's parameter digest, so editing the
annotations recomputes the slide on the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from acmil.annotations import AnnotationError, find_annotation_file, parse_classes, read_annotations, tile_coverage

from .tiling import TileGrid


@dataclass(frozen=True, kw_only=True)
class RegionFilter:
    """Which annotated regions decide the tiles (part of the extraction config)."""

    annotations_dir: Path
    roi_classes: tuple[str, ...] = ()
    exclude_classes: tuple[str, ...] = ()
    roi_min_overlap: float = 0.5

    def __post_init__(self) -> None:
        if not Path(self.annotations_dir).is_dir():
            raise FileNotFoundError(f"{self.annotations_dir}: annotations folder not found")
        if not self.roi_classes and not self.exclude_classes:
            raise ValueError("--annotations needs --roi-classes and/or --exclude-classes (which classes to use)")
        if not 0 < self.roi_min_overlap <= 1:
            raise ValueError(f"--roi-min-overlap must be in (0, 1], got {self.roi_min_overlap}")

    def settings(self) -> dict:
        return {
            "roi_classes": list(self.roi_classes),
            "exclude_classes": list(self.exclude_classes),
            "roi_min_overlap": self.roi_min_overlap,
        }


def add_region_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--annotations`` option group of ``acmil preprocess``."""
    g = parser.add_argument_group("annotations (QuPath GeoJSON, DIR/<slide_id>.geojson)")
    g.add_argument("--annotations", type=Path, help="folder of GeoJSON annotation files named by slide id")
    g.add_argument(
        "--roi-classes",
        help="keep only tiles inside annotations of these classes (comma-separated; '*' = any annotation)",
    )
    g.add_argument("--exclude-classes", help="drop tiles touching annotations of these classes, e.g. Pen,Artifact")
    g.add_argument("--roi-min-overlap", type=float, default=0.5, help="area fraction of a tile inside the ROI")


def region_filter_from_args(args: argparse.Namespace | Any) -> RegionFilter | None:
    """The filter the options describe (parsed options, or a config with the same attribute names), or None
    without ``--annotations``."""
    roi, exclude = parse_classes(args.roi_classes), parse_classes(args.exclude_classes)
    if args.annotations is None:
        if roi or exclude:
            raise ValueError("--roi-classes / --exclude-classes need --annotations DIR")
        return None
    return RegionFilter(
        annotations_dir=Path(args.annotations),
        roi_classes=tuple(roi),
        exclude_classes=tuple(exclude),
        roi_min_overlap=float(args.roi_min_overlap),
    )


def region_digest(digest: str, regions: RegionFilter | None, slide_id: str) -> str:
    """The slide's parameter digest extended by the filter settings and its annotation file's bytes."""
    if regions is None:
        return digest
    path = find_annotation_file(regions.annotations_dir, slide_id)
    content = hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else "none"
    spec = f"{digest}|{sorted(regions.settings().items())}|{content}"
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def apply_regions(
    grid: TileGrid, regions: RegionFilter | None, slide_id: str, dims: tuple[int, int]
) -> tuple[TileGrid, dict]:
    """The grid's tiles that the annotations allow, and the record for the feature file's provenance.

    Raises:
        AnnotationError: unusable annotation file, or ROI classes without a file / without such annotations.
    """
    if regions is None:
        return grid, {}
    path = find_annotation_file(regions.annotations_dir, slide_id)
    record: dict = {**regions.settings(), "file": path.name if path else None, "n_tiles_tissue": len(grid)}
    if path is None:
        if regions.roi_classes:
            raise AnnotationError(
                f"{regions.annotations_dir}: no annotation file for slide {slide_id!r} "
                f"({slide_id}.geojson), but --roi-classes asks to tile only inside annotations"
            )
        return grid, {**record, "n_tiles_kept": len(grid), "n_outside_roi": 0, "n_excluded": 0}
    found = read_annotations(path, dims)
    record.update(sha256=found.digest, warnings=found.warnings)
    for warning in found.warnings:  # repaired / clipped / ignored: said now, and kept in the record
        tqdm.write(f"acmil preprocess: warning: {slide_id}: {path.name}: {warning}", file=sys.stderr)
    patch = float(grid.patch_size_level0)
    keep = grid.coords[:, 0] >= 0  # all True
    if regions.roi_classes:
        if not found.select(regions.roi_classes):
            counts = ", ".join(f"{k}: {v}" for k, v in found.class_counts().items()) or "none"
            raise AnnotationError(
                f"{path}: no annotation of ROI class {', '.join(regions.roi_classes)} (classes in the file: {counts})"
            )
        inside = tile_coverage(grid.coords, patch, found.region(regions.roi_classes)) >= regions.roi_min_overlap
        record["n_outside_roi"] = int((~inside).sum())
        keep &= inside
    else:
        record["n_outside_roi"] = 0
    if regions.exclude_classes:
        touched = tile_coverage(grid.coords, patch, found.region(regions.exclude_classes)) > 0
        record["n_excluded"] = int((touched & keep).sum())
        keep &= ~touched
    else:
        record["n_excluded"] = 0
    record["n_tiles_kept"] = int(keep.sum())
    if len(grid) and not keep.any():
        raise AnnotationError(
            f"{path}: no tile left of {len(grid)} tissue tiles ({record['n_outside_roi']} outside "
            f"the ROI classes, {record['n_excluded']} touching excluded classes)"
        )
    return replace(grid, coords=grid.coords[keep], tissue_fraction=grid.tissue_fraction[keep]), record
