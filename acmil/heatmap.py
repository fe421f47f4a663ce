"""Attention heatmaps rendered from stored tile coordinates and scores, vectorised.

Shared by the service (``/heatmap.png``, the viewer's overlay layer) and the analyses (``acmil heatmap``).
Nothing here reads slides or runs models: inputs are arrays (and optionally a background image), so the
same code renders a heatmap for a slide, for a slide whose image is missing (blank canvas) or for a test.

Public API:
    normalise_scores(scores, method) -> (N,) float32 in [0, 1]
    rasterise(coords, values, patch_size_level0, level0_size, out_size, smoothing_sigma) -> (value, covered)
    colourise(value, covered, cmap, alpha) -> (H, W, 4) uint8 RGBA (alpha 0 where no tile)
    render_heatmap(...) -> PIL.Image (RGB): heatmap blended over a background; background untouched elsewhere
    render_overlay(...) -> PIL.Image (RGBA): the coloured layer alone, transparent where there is no tile
    overlay_max_size(...) -> a raster size giving each tile a few pixels (for DeepZoomOverlay)
    DeepZoomOverlay: DeepZoom tiles of an overlay, aligned with ``openslide.deepzoom.DeepZoomGenerator``

Rasterisation adds each tile's rectangle into a 2-D difference array (four ``bincount`` corners per
tile) and integrates it with two cumulative sums, so the cost is O(N + H*W) whatever the tile count;
overlapping tiles are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

from acmil.geometry import rank_normalise

NORMALISATIONS = ("log", "rank", "percentile", "minmax")
BLANK_RGB = (255, 255, 255)

# One look for a slide everywhere: the viewer's defaults (service/static/index.html), `acmil heatmap` and the
# demo's report. Why these: docs/DESIGN.md, "Heatmap scaling".
DEFAULT_NORMALISATION = "log"
DEFAULT_CMAP = "inferno"
DEFAULT_SMOOTHING = 0.5  # Gaussian sigma in tiles: softens tile edges and still shows a single hot tile
DEFAULT_TRANSPARENT_BELOW = 0.4  # scaled scores under this are not drawn
FADE_WIDTH = 0.1  # above the cut-off, opacity ramps up over this much of the scale (no hard edge)


SCALING_WORDS = {  # the viewer's legend says the same (service/static/viewer.js)
    "log": "log attention, from the slide's median tile (0) to its most attended tile (1)",
    "rank": "attention rank within the slide (0 = least, 1 = most attended tile)",
    "minmax": "attention, linear from the slide's least (0) to its most (1) attended tile",
}


def scaling_label(
    normalisation: str = DEFAULT_NORMALISATION,
    transparent_below: float = DEFAULT_TRANSPARENT_BELOW,
    smoothing_sigma: float = DEFAULT_SMOOTHING,
) -> str:
    """The scaling of a heatmap in words, for its legend or caption."""
    parts = [SCALING_WORDS["rank" if normalisation == "percentile" else normalisation]]
    if transparent_below > 0:
        parts.append(f"below {transparent_below:g} not drawn")
    if smoothing_sigma > 0:
        parts.append(f"smoothed over {smoothing_sigma:g} tile")
    return "; ".join(parts)


def fade(value: np.ndarray, transparent_below: float) -> np.ndarray:
    """(H, W) opacity factor in [0, 1]: 0 under the cut-off, ramping to 1 over :data:`FADE_WIDTH` above it."""
    if transparent_below <= 0:
        return np.ones_like(value, dtype=np.float32)
    return np.clip((value - transparent_below) / FADE_WIDTH, 0.0, 1.0).astype(np.float32)


def normalise_scores(scores: np.ndarray, method: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """Scale attention scores to [0, 1].

    Args:
        scores: (N,) attention scores (any real values).
        method: ``"log"`` (the default): the log of the score, linear from the slide's median tile (0; the
            less attended half stays 0) to its most attended tile (1). Softmax attention is heavy-tailed,
            so its log (the attention logit) separates the tiles the model looked at from the rest; the
            median floor keeps a few near-zero tiles from stretching the scale. Scores <= 0 count as the
            smallest positive float. ``"rank"`` (alias ``"percentile"``): the score's rank among all tiles,
            ties averaged, so the colours spread evenly whatever the distribution; ``"minmax"``: linear
            from the minimum (0) to the maximum (1). Why log is the default: docs/DESIGN.md.

    Returns:
        (N,) float32 in [0, 1]. Constant scores give 0.5 everywhere with any method; one tile gives 0.5.

    Raises:
        ValueError: unknown method, scores not 1-D, or NaN/inf in the scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {scores.shape}")
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALISATIONS)}")
    if scores.size and not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    n = scores.size
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if method == "log":
        logs = np.log(np.maximum(scores, np.finfo(np.float64).tiny))
        lo, hi = np.median(logs), logs.max()
        if hi <= lo:
            return np.full(n, 0.5, dtype=np.float32)
        return np.clip((logs - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if method == "minmax":
        lo, hi = scores.min(), scores.max()
        if hi <= lo:
            return np.full(n, 0.5, dtype=np.float32)
        return ((scores - lo) / (hi - lo)).astype(np.float32)
    return rank_normalise(scores).astype(np.float32)


def output_size(level0_size: Sequence[int], max_size: int | None) -> tuple[int, int]:
    """(width, height) of a rendering whose longer side is at most ``max_size`` (None: level-0 size)."""
    w, h = int(level0_size[0]), int(level0_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"level0_size must be positive, got {tuple(level0_size)}")
    if max_size is None or max(w, h) <= max_size:
        return w, h
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    scale = max_size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def overlay_max_size(
    level0_size: Sequence[int], patch_size_level0: float, px_per_tile: int = 8, cap: int = 4096, floor: int = 256
) -> int:
    """Longest side for an overlay raster that gives each tile about ``px_per_tile`` pixels.

    Enough for crisp tile edges when the viewer magnifies it (nearest-neighbour), without rasterising
    the slide at full resolution; clamped to [floor, cap].
    """
    tiles_along = max(int(level0_size[0]), int(level0_size[1])) / float(patch_size_level0)
    return int(min(cap, max(floor, math.ceil(tiles_along * px_per_tile))))


def rasterise(
    coords: np.ndarray,
    values: np.ndarray,
    patch_size_level0: float,
    level0_size: Sequence[int],
    out_size: Sequence[int],
    smoothing_sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint each tile's value over its square, at ``out_size`` pixels for the level-0 extent.

    Args:
        coords: (N, 2) level-0 (x, y) of each tile's top-left corner.
        values: (N,) value per tile (usually normalised scores).
        patch_size_level0: side of a tile in level-0 pixels.
        level0_size: (width, height) of the slide at level 0.
        out_size: (width, height) of the raster.
        smoothing_sigma: Gaussian sigma in tiles (multiples of the tile side, so the look does not
            depend on the output size); 0 = none. Smoothing is normalised by coverage, so it never
            darkens tissue edges, and the covered area is unchanged.

    Returns:
        value: (H, W) float32, the mean value of the tiles covering each pixel (0 where none).
        covered: (H, W) bool, True where at least one tile lies.
    """
    coords = np.asarray(coords)
    values = np.asarray(values, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or values.shape != (coords.shape[0],):
        raise ValueError(f"coords must be (N, 2) and values (N,), got {coords.shape} and {values.shape}")
    if patch_size_level0 is None or patch_size_level0 <= 0:
        raise ValueError(f"patch_size_level0 must be positive, got {patch_size_level0}")
    out_w, out_h = int(out_size[0]), int(out_size[1])
    sx, sy = out_w / float(level0_size[0]), out_h / float(level0_size[1])
    xy = coords.astype(np.float64)
    # Rounding both edges (not floor/ceil) keeps neighbouring tiles from overlapping by a pixel.
    x0 = np.clip(np.round(xy[:, 0] * sx), 0, out_w).astype(np.int64)
    y0 = np.clip(np.round(xy[:, 1] * sy), 0, out_h).astype(np.int64)
    x1 = np.clip(np.maximum(np.round((xy[:, 0] + patch_size_level0) * sx), x0 + 1), 0, out_w).astype(np.int64)
    y1 = np.clip(np.maximum(np.round((xy[:, 1] + patch_size_level0) * sy), y0 + 1), 0, out_h).astype(np.int64)
    keep = (x1 > x0) & (y1 > y0)  # tiles entirely outside the slide vanish
    x0, y0, x1, y1, values = x0[keep], y0[keep], x1[keep], y1[keep], values[keep]

    stride = out_w + 1  # difference arrays are one larger than the raster on each axis
    size = (out_h + 1) * stride
    corners = np.concatenate([y0 * stride + x0, y0 * stride + x1, y1 * stride + x0, y1 * stride + x1])
    signs = np.concatenate([np.ones_like(x0), -np.ones_like(x0), -np.ones_like(x0), np.ones_like(x0)])
    # float32 in place halves the memory traffic; the rounding error (< 1e-3) is below one colour step.
    count = _integrate(np.bincount(corners, weights=signs, minlength=size), out_h, out_w)
    total = _integrate(np.bincount(corners, weights=np.tile(values, 4) * signs, minlength=size), out_h, out_w)
    covered = count > 0.5  # float sums: compare with a margin rather than > 0
    value = np.zeros((out_h, out_w), dtype=np.float32)
    value[covered] = total[covered] / count[covered]

    if smoothing_sigma and smoothing_sigma > 0 and covered.any():
        sigma = (smoothing_sigma * patch_size_level0 * sy, smoothing_sigma * patch_size_level0 * sx)
        value = np.where(covered, _smooth(value, covered, sigma), 0.0).astype(np.float32)
    return value, covered


def _integrate(deltas: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """2-D prefix sum of a flat (out_h + 1) * (out_w + 1) difference array, cropped to (out_h, out_w)."""
    grid = deltas.astype(np.float32).reshape(out_h + 1, out_w + 1)
    np.cumsum(grid, axis=0, out=grid)
    np.cumsum(grid, axis=1, out=grid)
    return grid[:out_h, :out_w]


def _smooth(value: np.ndarray, covered: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Coverage-normalised Gaussian smoothing of ``value`` (H, W); sigma (y, x) in pixels.

    A wide Gaussian is run on a block-averaged copy and the result upsampled bilinearly: the same
    picture for a fraction of the cost (the filter's cost grows with sigma).
    """
    from scipy.ndimage import gaussian_filter

    factor = max(1, int(min(sigma) // 3))
    weight = covered.astype(np.float32)
    num, den = value * weight, weight
    if factor > 1:
        num = np.asarray(Image.fromarray(num, mode="F").reduce(factor))
        den = np.asarray(Image.fromarray(den, mode="F").reduce(factor))
    low_sigma = (sigma[0] / factor, sigma[1] / factor)
    num = gaussian_filter(num, low_sigma, mode="constant")
    den = gaussian_filter(den, low_sigma, mode="constant")
    ratio = num / np.maximum(den, 1e-6)
    if factor > 1:
        height, width = value.shape
        ratio = np.asarray(Image.fromarray(ratio, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    return ratio


@lru_cache(maxsize=64)
def colormap_lut(cmap: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colormap, by name.

    Raises:
        ValueError: unknown colormap name.
    """
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r} (any matplotlib colormap name, e.g. jet, viridis)") from None
    return (colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def _coloured(value: np.ndarray, cmap: str) -> Image.Image:
    """RGB image of ``value`` (H, W) in [0, 1] through a colormap; ``Image.point`` looks up in C."""
    index = Image.fromarray(np.clip(value * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    lut = colormap_lut(cmap)
    return Image.merge("RGB", [index.point(lut[:, channel].tolist()) for channel in range(3)])


def colourise(
    value: np.ndarray, covered: np.ndarray, cmap: str = "jet", alpha: float = 1.0, transparent_below: float = 0.0
) -> np.ndarray:
    """RGBA layer of a raster: colour by ``cmap``, opacity ``alpha`` where covered (faded under
    ``transparent_below``, see :func:`fade`), 0 elsewhere.

    Args:
        value: (H, W) float in [0, 1].
        covered: (H, W) bool.

    Returns:
        (H, W, 4) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = _coloured(value, cmap)
    if transparent_below > 0:
        opacity = np.where(covered, alpha * fade(value, transparent_below) * 255.0 + 0.5, 0.0).astype(np.uint8)
    else:
        opacity = np.where(covered, np.uint8(round(alpha * 255)), np.uint8(0))
    mask = Image.fromarray(opacity, mode="L")
    rgb.putalpha(mask)
    return np.asarray(rgb)


def _check_inputs(coords: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = np.asarray(coords)
    scores = np.asarray(scores)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (N, 2), got shape {coords.shape}")
    if scores.shape != (coords.shape[0],):
        raise ValueError(f"scores must be ({coords.shape[0]},) to match coords, got shape {scores.shape}")
    return coords, scores


def render_overlay(
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size_level0: float,
    level0_size: Sequence[int],
    max_size: int | None = 2048,
    cmap: str = "jet",
    alpha: float = 1.0,
    smoothing_sigma: float = 0.0,
    normalisation: str = DEFAULT_NORMALISATION,
    transparent_below: float = 0.0,
) -> Image.Image:
    """The coloured attention layer alone: RGBA, transparent where there is no tile.

    Arguments as :func:`render_heatmap`. Its pixel grid spans the whole level-0 extent, so placed over the
    slide at the same width it lines up with it (the viewer does this through :class:`DeepZoomOverlay`).
    """
    coords, scores = _check_inputs(coords, scores)
    size = output_size(level0_size, max_size)
    value, covered = rasterise(
        coords, normalise_scores(scores, normalisation), patch_size_level0, level0_size, size, smoothing_sigma
    )
    return Image.fromarray(colourise(value, covered, cmap, alpha, transparent_below), mode="RGBA")


def render_heatmap(
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size_level0: float,
    level0_size: Sequence[int],
    background: Image.Image | None = None,
    max_size: int | None = 2048,
    cmap: str = "jet",
    alpha: float = 0.5,
    smoothing_sigma: float = 0.0,
    normalisation: str = DEFAULT_NORMALISATION,
    transparent_below: float = 0.0,
) -> Image.Image:
    """Attention heatmap blended over a background (a slide thumbnail, or a blank white canvas).

    Args:
        coords: (N, 2) level-0 (x, y) of each tile's top-left corner.
        scores: (N,) attention per tile (e.g. ``BagPrediction.mean_attention``).
        patch_size_level0: tile side in level-0 pixels.
        level0_size: (width, height) of the slide at level 0.
        background: any-size image of the whole slide, resized to the output; None = white canvas.
        max_size: longest side of the output in pixels (None = level-0 size; beware of huge slides).
        cmap: any matplotlib colormap name.
        alpha: heatmap opacity over the background, in [0, 1].
        smoothing_sigma: Gaussian smoothing in tiles (0 = none); see :func:`rasterise`.
        normalisation: ``"rank"``/``"percentile"`` or ``"minmax"``; see :func:`normalise_scores`.
        transparent_below: scaled scores under this show the background only (0 = draw every tile); see :func:`fade`.

    Returns:
        RGB image of :func:`output_size`; pixels with no tile are exactly the background's.
    """
    coords, scores = _check_inputs(coords, scores)
    size = output_size(level0_size, max_size)
    norm = normalise_scores(scores, normalisation)
    colormap_lut(cmap)  # validate the name before the heavy work
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    value, covered = rasterise(coords, norm, patch_size_level0, level0_size, size, smoothing_sigma)
    if background is None:
        base = Image.new("RGB", size, BLANK_RGB)
    else:
        base = background.convert("RGB")
        if base.size != size:
            base = base.resize(size, Image.Resampling.BILINEAR)
    blended = Image.blend(base, _coloured(value, cmap), alpha)
    # Only covered pixels take the blend (faded under the cut-off): the background elsewhere stays byte-identical.
    if transparent_below > 0:
        weight = np.where(covered, fade(value, transparent_below) * 255.0 + 0.5, 0.0).astype(np.uint8)
    else:
        weight = covered.astype(np.uint8) * 255
    return Image.composite(blended, base, Image.fromarray(weight, mode="L"))


class DeepZoomOverlay:
    """DeepZoom tiles of an RGBA overlay, aligned with ``openslide.deepzoom.DeepZoomGenerator``.

    The overlay image (from :func:`render_overlay`) spans the slide's level-0 extent at a lower
    resolution; each tile is cut from it for exactly the level-0 region that the slide's DeepZoom tile
    of the same (level, col, row) covers, scaled with nearest-neighbour so tile edges stay crisp.
    Give it the same ``tile_size``/``overlap`` as the slide's generator and the two layers line up in
    OpenSeadragon (both DZIs describe the same level-0 width and height).

    Not ``DeepZoomGenerator(openslide.ImageSlide(overlay))``: that pyramid is the overlay's own (192 x 256 px
    for CMU-1-Small-Region: 9 levels where the slide's has 13), so its tile addresses miss the slide's, and
    its tiles come back RGB, composited on a background, without the alpha that leaves the slide visible.
    The overlay cannot be raised to level 0 instead (a 100k x 80k px RGBA image is 32 GB). The geometry below
    is openslide's (halve rounding up, overlap on interior edges); a test compares it tile by tile.

    Args:
        overlay: RGBA image covering the whole slide (any resolution).
        level0_size: (width, height) of the slide at level 0.
        tile_size, overlap: DeepZoom tile geometry (openslide's defaults: 254 and 1).
    """

    def __init__(self, overlay: Image.Image, level0_size: Sequence[int], tile_size: int = 254, overlap: int = 1):
        self.overlay = overlay.convert("RGBA")
        self.width, self.height = int(level0_size[0]), int(level0_size[1])
        self.tile_size, self.overlap = int(tile_size), int(overlap)
        # DeepZoom level dimensions: halve (rounding up) until 1x1, as openslide.deepzoom does.
        dims = [(self.width, self.height)]
        while dims[-1] != (1, 1):
            w, h = dims[-1]
            dims.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
        self.level_dimensions: list[tuple[int, int]] = dims[::-1]
        self.level_count = len(self.level_dimensions)
        self.level_tiles = [
            (math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)) for w, h in self.level_dimensions
        ]

    def get_dzi(self, fmt: str = "png") -> str:
        """The DZI XML describing this pyramid (tiles in ``fmt``)."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Height="{self.height}" Width="{self.width}"/></Image>'
        )

    def tile_region(self, level: int, col: int, row: int) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
        """Level-0 box (x0, y0, x1, y1) and pixel size (w, h) of a DeepZoom tile.

        Raises:
            ValueError: level or address out of range.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"invalid level {level} (0..{self.level_count - 1})")
        cols, rows = self.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"invalid address ({col}, {row}) at level {level} ({cols}x{rows} tiles)")
        zw, zh = self.level_dimensions[level]
        ts, ov = self.tile_size, self.overlap
        x = col * ts - (ov if col > 0 else 0)
        y = row * ts - (ov if row > 0 else 0)
        w = min(ts * (col + 1) + (ov if col < cols - 1 else 0), zw) - x
        h = min(ts * (row + 1) + (ov if row < rows - 1 else 0), zh) - y
        down = 2 ** (self.level_count - 1 - level)  # level-0 pixels per level pixel
        box = (x * down, y * down, min((x + w) * down, self.width), min((y + h) * down, self.height))
        return box, (w, h)

    def get_tile(self, level: int, col: int, row: int) -> Image.Image:
        """RGBA tile at DeepZoom ``level`` and address (col, row)."""
        (x0, y0, x1, y1), size = self.tile_region(level, col, row)
        sx, sy = self.overlay.width / self.width, self.overlay.height / self.height
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        # Magnified: nearest keeps tile edges crisp. Reduced: box-average instead of dropping tiles.
        shrinking = (box[2] - box[0]) > size[0] or (box[3] - box[1]) > size[1]
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.NEAREST
        return self.overlay.resize(size, resample, box=box)
