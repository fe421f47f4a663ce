"""Units and slide geometry: the one home of every rule preprocessing, the analyses and the service share.

A core leaf module: numpy and scipy only (PIL imported inside :func:`read_mask`), no torch, no files of the
project. Conventions (docs/DESIGN.md, "Units and geometry"):

- Coordinates are level-0 pixels, (x, y) of a tile's top-left corner; a tile is a square of
  ``patch_size_level0`` level-0 pixels.
- MPP is micrometres per level-0 pixel; a value outside :data:`MPP_RANGE` is treated as missing.
- A mask's ``downsample`` is level-0 pixels per mask pixel. A mask pixel counts towards a tile when its
  centre lies inside the tile (box edges rounded to the nearest mask pixel, at least one pixel a side);
  parts of a tile beyond the mask image count as not covered.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

# Plausible µm per level-0 pixel of a slide scan: 0.05 (beyond a 100x objective) to 20 (a 0.5x overview).
# A default 72-dpi TIFF tag gives 352.8, which is not a scan.
MPP_RANGE = (0.05, 20.0)

# File extensions of the formats OpenSlide 4 reads (plus plain TIFF). MIRAX (.mrxs) is a file with a folder.
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm", ".czi"}
)

MASK_DOWNSAMPLE_KEY = "acmil_downsample"  # PNG text chunk stating a mask's downsample


def plausible_mpp(value: Any) -> float | None:
    """``value`` as a float µm/px when it is finite and inside :data:`MPP_RANGE`, else None."""
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    return mpp if math.isfinite(mpp) and MPP_RANGE[0] <= mpp <= MPP_RANGE[1] else None


def is_slide_file(path: str | os.PathLike) -> bool:
    """True when the file name ends in a slide extension (any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in SLIDE_EXTENSIONS


def box_coverage(mask: np.ndarray, x0: Any, y0: Any, x1: Any, y1: Any) -> np.ndarray:
    """Fraction of each box [x0, x1) x [y0, y1) (mask pixels, float) covered by ``mask``.

    Edges are rounded to the nearest mask pixel (a pixel counts when its centre is inside), at least one
    pixel a side; parts beyond the mask image count as empty. O(N) for N boxes through a summed-area table.

    Args:
        mask: (H, W) bool or 0/1.
        x0, y0, x1, y1: (N,) box edges in mask pixels.

    Returns:
        (N,) float64 in [0, 1].
    """
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = (np.asarray(mask) > 0).astype(np.int64).cumsum(0).cumsum(1)

    def nearest(v: Any) -> np.ndarray:
        return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)

    xa, ya = nearest(x0), nearest(y0)
    xb, yb = np.maximum(nearest(x1), xa + 1), np.maximum(nearest(y1), ya + 1)
    area = ((xb - xa) * (yb - ya)).astype(np.float64)
    xa, xb = np.clip(xa, 0, w), np.clip(xb, 0, w)
    ya, yb = np.clip(ya, 0, h), np.clip(yb, 0, h)
    inside = integral[yb, xb] - integral[ya, xb] - integral[yb, xa] + integral[ya, xa]
    return inside / area


def tile_coverage(mask: np.ndarray, coords: np.ndarray, patch_size_level0: float, downsample: float) -> np.ndarray:
    """Fraction of each square tile covered by a mask (see :func:`box_coverage` for the rounding).

    Args:
        mask: (H, W) bool at ``downsample`` level-0 pixels per mask pixel.
        coords: (N, 2) level-0 (x, y) of each tile's top-left corner.
        patch_size_level0: tile side in level-0 pixels.
        downsample: level-0 pixels per mask pixel (> 0).

    Returns:
        (N,) float64 in [0, 1].
    """
    if not downsample or downsample <= 0:
        raise ValueError(f"mask downsample must be > 0, got {downsample!r}")
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2) / float(downsample)
    side = float(patch_size_level0) / float(downsample)
    return box_coverage(mask, xy[:, 0], xy[:, 1], xy[:, 0] + side, xy[:, 1] + side)


def read_mask(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """A mask image as (H, W) bool, True where any colour channel is non-zero, and the downsample its PNG
    text chunk ``acmil_downsample`` states (None when absent).

    Non-zero, not > 127: a label mask storing class 1 as pixel value 1 is a mask too.

    Raises:
        ValueError: the file is not a readable image, or the text chunk is not a number.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
            stated = getattr(img, "text", {}).get(MASK_DOWNSAMPLE_KEY)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read mask image ({err})") from err
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    try:
        downsample = float(stated) if stated else None
    except ValueError:
        raise ValueError(f"{path}: bad {MASK_DOWNSAMPLE_KEY} text chunk {stated!r}") from None
    if downsample is not None and not (math.isfinite(downsample) and downsample > 0):
        raise ValueError(f"{path}: {MASK_DOWNSAMPLE_KEY} must be > 0, got {stated!r}")
    return arr > 0, downsample


def level0_extent(coord_attrs: dict, coords: np.ndarray, patch_size_level0: float) -> tuple[int, int]:
    """Level-0 (width, height) of a slide: the feature file's ``level0_width/height``, else the tiles' extent.

    Args:
        coord_attrs: the ``coords`` dataset's attributes.
        coords: (N, 2) level-0 (x, y) of the tiles (N >= 1 when the attributes are missing).
        patch_size_level0: tile side in level-0 pixels.
    """
    w, h = coord_attrs.get("level0_width"), coord_attrs.get("level0_height")
    if w and h:
        return int(w), int(h)
    coords = np.asarray(coords).reshape(-1, 2)
    if coords.shape[0] == 0:
        raise ValueError("no tiles and no level0_width/level0_height: the slide's extent is unknown")
    far = coords.max(axis=0) + patch_size_level0
    return int(max(far[0], 1)), int(max(far[1], 1))


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """(N,) values mapped to [0, 1] by rank, ties sharing their mean rank; a single value maps to 0.5."""
    from scipy.stats import rankdata  # here, not at the top: scipy.stats costs ~1.4 s, and --help imports this module

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return np.full(1, 0.5)
    return (rankdata(values, method="average") - 1.0) / (values.size - 1)
