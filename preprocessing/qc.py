"""QC picture of one slide: thumbnail, tissue contours (green) and the kept tile grid (blue)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .tissue import tissue_contours


def draw_qc(
    thumb: np.ndarray,
    mask: np.ndarray | None,
    coords: np.ndarray,
    patch_size_level0: float,
    level0_size: tuple[int, int],
) -> np.ndarray:
    """(h, w, 3) uint8 RGB overlay.

    Args:
        thumb: (h, w, 3) uint8 RGB thumbnail of the whole slide.
        mask: (h, w) bool tissue mask at the thumbnail's scale, or None.
        coords: (N, 2) level-0 (x, y) of the kept tiles.
        patch_size_level0: tile side in level-0 pixels.
        level0_size: level-0 (width, height).
    """
    img = np.ascontiguousarray(thumb.copy())
    sx, sy = img.shape[1] / level0_size[0], img.shape[0] / level0_size[1]
    for x, y in np.asarray(coords).reshape(-1, 2):
        p0 = (int(round(x * sx)), int(round(y * sy)))
        p1 = (int(round((x + patch_size_level0) * sx)) - 1, int(round((y + patch_size_level0) * sy)) - 1)
        cv2.rectangle(img, p0, p1, (40, 90, 230), 1)
    if mask is not None:
        cv2.drawContours(img, tissue_contours(mask), -1, (0, 200, 0), max(1, min(img.shape[:2]) // 300))
    return img


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB PNG atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write PNG")
    os.replace(tmp, path)
    return path


def save_qc_geojson(path: str | os.PathLike, mask: np.ndarray | None, grid, dims: tuple[int, int], slide_id: str,
                    mpp: float | None = None) -> Path:
    """The QC picture's content as QuPath GeoJSON, to review and correct tissue detection in QuPath: tissue
    contours (``annotation`` objects, class Tissue, with holes) and the kept tiles (``tile`` objects) exactly
    as the feature file stores them (coords, and the side rounded as ``patch_size_level0``)."""
    from acmil.geojson import tissue_features, write_geojson

    collection = tissue_features(slide_id, mask, dims, grid.coords, int(round(grid.patch_size_level0)), mpp=mpp,
                                 tissue_fraction=grid.tissue_fraction)
    return write_geojson(path, collection)
