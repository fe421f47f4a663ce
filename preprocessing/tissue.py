"""Tissue segmentation at thumbnail scale: pure functions of numpy arrays (no slide I/O here).

HSV saturation -> median blur -> threshold (Otsu, floored at ``min_saturation``, or a fixed value) ->
morphological closing -> drop components smaller than ``min_area_mm2`` -> fill holes smaller than
``max_hole_mm2``. Parameters that are areas are in mm², so they mean the same at any thumbnail scale; kernel
sizes are in thumbnail pixels at the segmentation resolution ``seg_mpp`` (fixed, so they too are physical).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True, kw_only=True)
class TissueParams:
    """Segmentation settings (all recorded in each feature file as ``tissue_params``)."""

    seg_mpp: float = 4.0  # µm per thumbnail pixel used for segmentation
    threshold: int | None = None  # fixed saturation threshold 0-255; None = Otsu
    min_saturation: int = 15  # floor for the Otsu threshold, so a blank slide does not become "tissue"
    median_blur: int = 7  # px, odd
    close_kernel: int = 5  # px, morphological closing
    min_area_mm2: float = 0.01  # tissue components smaller than this are dropped
    max_hole_mm2: float = 0.005  # holes smaller than this are filled

    def as_dict(self) -> dict:
        return asdict(self)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """(h, w) uint8 HSV saturation of an (h, w, 3) uint8 RGB image."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1]


def segment_tissue(rgb: np.ndarray, mpp: float, params: TissueParams = TissueParams()) -> tuple[np.ndarray, int]:
    """Tissue mask of a thumbnail.

    Args:
        rgb: (h, w, 3) uint8 thumbnail.
        mpp: µm per thumbnail pixel (to turn the mm² parameters into pixels).
        params: segmentation settings.

    Returns:
        (mask (h, w) bool, the saturation threshold used).
    """
    sat = saturation(rgb)
    k = max(1, params.median_blur | 1)
    if k > 1:
        sat = cv2.medianBlur(sat, k)
    if params.threshold is None:
        otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        thr = max(int(otsu), params.min_saturation)
    else:
        thr = int(params.threshold)
    mask = (sat > thr).astype(np.uint8)
    if params.close_kernel > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (params.close_kernel, params.close_kernel))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    px_per_mm2 = 1e6 / (mpp * mpp)
    mask = _remove_small(mask, params.min_area_mm2 * px_per_mm2)
    mask = 1 - _remove_small(1 - mask, params.max_hole_mm2 * px_per_mm2, keep_border=True)
    return mask.astype(bool), thr


def _remove_small(mask: np.ndarray, min_px: float, keep_border: bool = False) -> np.ndarray:
    """Zero the 8-connected components of ``mask`` smaller than ``min_px`` (optionally keep border ones)."""
    if min_px <= 1 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    if keep_border:  # background touching the border is not a hole
        h, w = mask.shape
        x, y, bw, bh = (stats[:, i] for i in range(4))
        keep |= (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    keep[0] = False  # label 0 is the complement
    return keep[labels].astype(np.uint8)


def tissue_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer and hole contours of a mask, as cv2 point arrays (for QC drawing)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)
