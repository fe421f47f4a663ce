"""Ground-truth tile labels from tumour masks (PNG, one per slide, at some downsample of level 0), or from
pathologists' GeoJSON annotations of chosen classes (QuPath exports; :class:`GroundTruth`).

The mask's downsample is, in order: given explicitly, stated in the PNG (text chunk ``acmil_downsample``),
or inferred from the slide's level-0 size stored with the features (``coords.attrs['level0_width']``).
Geometry (reading a mask, the covered fraction of a tile and its rounding) is :mod:`acmil.geometry`'s.
With annotations the fraction is exact, from the polygons (shapely, STRtree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acmil.features import SlideFeatures
from acmil.geometry import read_mask, tile_coverage

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".jpg")


def find_mask(masks_dir: str | os.PathLike, slide_id: str) -> Path | None:
    """``masks_dir/<slide_id>.png`` (or another image suffix), or None when the slide has no mask."""
    for suffix in MASK_SUFFIXES:
        path = Path(masks_dir) / f"{slide_id}{suffix}"
        if path.is_file():
            return path
    return None


def mask_downsample(mask_shape: tuple[int, int], slide: SlideFeatures, downsample: float | None = None) -> float:
    """Level-0 pixels per mask pixel: given, else level-0 width / mask width (checked against height)."""
    if downsample:
        return float(downsample)
    w0 = slide.coord_attrs.get("level0_width")
    h0 = slide.coord_attrs.get("level0_height")
    if not w0 or not h0:
        raise ValueError(
            f"{slide.slide_id}: feature file has no level0_width/level0_height; give the mask downsample explicitly"
        )
    dx, dy = float(w0) / mask_shape[1], float(h0) / mask_shape[0]
    if abs(dx - dy) > 0.02 * max(dx, dy) + 1.0:
        raise ValueError(
            f"{slide.slide_id}: mask {mask_shape[1]}x{mask_shape[0]} does not match the slide's aspect "
            f"({w0}x{h0}); give the mask downsample explicitly"
        )
    return (dx + dy) / 2


def tile_fractions(mask: np.ndarray, coords: np.ndarray, patch_size_level0: int, downsample: float) -> np.ndarray:
    """(N,) fraction of each tile covered by the mask: :func:`acmil.geometry.tile_coverage`."""
    return tile_coverage(mask, coords, patch_size_level0, downsample)


def tile_labels(
    masks_dir: str | os.PathLike,
    slide: SlideFeatures,
    threshold: float = 0.5,
    downsample: float | None = None,
    missing_is_negative: bool = False,
) -> np.ndarray | None:
    """(N,) bool tumour label per tile (covered fraction >= ``threshold``), or None without a mask.

    ``missing_is_negative``: a slide without a mask file counts as all-negative (a cohort whose
    normal slides have no mask).
    """
    path = find_mask(masks_dir, slide.slide_id)
    if path is None:
        return np.zeros(slide.n_patches, dtype=bool) if missing_is_negative else None
    mask, stated = read_mask(path)
    patch = slide.patch_size_level0
    if not patch:
        raise ValueError(f"{slide.slide_id}: unknown patch size (no patch_size_level0, coordinates not on a grid)")
    ds = mask_downsample(mask.shape, slide, downsample or stated)
    return tile_fractions(mask, slide.coords, int(patch), ds) >= threshold


def slide_level0_size(slide: SlideFeatures) -> tuple[int, int] | None:
    """Level-0 (width, height) stored with the features, or None (then annotations are not range-checked)."""
    w0, h0 = slide.coord_attrs.get("level0_width"), slide.coord_attrs.get("level0_height")
    return (int(w0), int(h0)) if w0 and h0 else None


def annotation_tile_labels(
    annotations_dir: str | os.PathLike,
    slide: SlideFeatures,
    classes: list[str],
    threshold: float = 0.5,
    missing_is_negative: bool = False,
) -> tuple[np.ndarray | None, list[str]]:
    """(N,) bool tumour label per tile from ``<slide_id>.geojson`` (area inside annotations of ``classes`` >=
    ``threshold``), or None without a file; and the file's warnings. Raises ValueError for an unusable file."""
    from acmil.annotations import find_annotation_file, read_annotations, tile_coverage

    path = find_annotation_file(annotations_dir, slide.slide_id)
    if path is None:
        return (np.zeros(slide.n_patches, dtype=bool) if missing_is_negative else None), []
    patch = slide.patch_size_level0
    if not patch:
        raise ValueError(f"{slide.slide_id}: unknown patch size (no patch_size_level0, coordinates not on a grid)")
    found = read_annotations(path, slide_level0_size(slide))
    warnings = list(found.warnings)
    if not found.select(classes):
        counts = found.class_counts()
        listing = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
        warnings.append(f"{path.name}: no annotation of class {', '.join(classes)} (classes in the file: {listing})")
    coverage = tile_coverage(slide.coords, patch, found.region(classes))
    return coverage >= threshold, warnings


@dataclass(frozen=True)
class GroundTruth:
    """Where tile labels come from: PNG masks (``masks_dir``) or GeoJSON annotations of ``classes``."""

    masks_dir: str | None = None
    annotations_dir: str | None = None
    classes: tuple[str, ...] = ("Tumor",)
    threshold: float = 0.5
    downsample: float | None = None  # masks only
    missing_is_negative: bool = False

    def __post_init__(self) -> None:
        if bool(self.masks_dir) == bool(self.annotations_dir):
            raise ValueError("give exactly one of --masks and --annotations")
        folder = self.masks_dir or self.annotations_dir
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder}: {'masks' if self.masks_dir else 'annotations'} folder not found")
        if self.annotations_dir and not self.classes:
            raise ValueError("--classes: name at least one annotation class (e.g. Tumor)")

    def labels(self, slide: SlideFeatures) -> tuple[np.ndarray | None, list[str]]:
        """(N,) bool labels or None (no mask / annotation file), and warnings about the source file."""
        if self.masks_dir:
            return tile_labels(self.masks_dir, slide, self.threshold, self.downsample, self.missing_is_negative), []
        return annotation_tile_labels(
            self.annotations_dir, slide, list(self.classes), self.threshold, self.missing_is_negative
        )

    def describe(self) -> dict:
        if self.masks_dir:
            return {"masks": str(self.masks_dir)}
        return {"annotations": str(self.annotations_dir), "classes": list(self.classes)}
