"""Tile grids at an exact resolution: pure geometry on numbers and masks (no slide I/O).

A tile is ``tile_size`` pixels at ``target_mpp`` µm/px, i.e. ``tile_size * target_mpp / mpp0`` level-0 pixels
(not necessarily an integer: 256 px at 0.5 µm/px on a 0.499 µm/px scan is 256.51 level-0 px). It is read from
the pyramid level whose downsample is the largest not above that scale factor (so the read is never upsampled
when a finer level exists), as ``read_size`` pixels of that level, then resized to ``tile_size``.
Coordinates are level-0 (x, y) of the top-left corner, rounded to integers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from acmil.geometry import box_coverage


@dataclass(frozen=True, kw_only=True)
class TilingParams:
    """Tiling settings (recorded in each feature file)."""

    target_mpp: float = 0.5  # µm/px of the tiles given to the encoder (0.5 ~ 20x)
    tile_size: int = 256  # pixels at the target resolution
    overlap: int = 0  # pixels at the target resolution shared by neighbouring tiles
    min_tissue: float = 0.25  # keep a tile if at least this fraction of it is tissue

    def __post_init__(self) -> None:
        if self.target_mpp <= 0 or self.tile_size < 8 or not 0 <= self.overlap < self.tile_size:
            raise ValueError(
                f"bad tiling parameters {self}: need target_mpp > 0, tile_size >= 8, 0 <= overlap < tile_size"
            )
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TileGrid:
    """The tiles kept on one slide and how to read them.

    Attributes:
        coords: (N, 2) int64 level-0 (x, y) of each tile's top-left corner, row-major order.
        tissue_fraction: (N,) float64 tissue fraction of each tile.
        tile_size: side of a tile given to the encoder, in pixels at the target resolution.
        patch_size_level0: level-0 pixels covered by one tile (may be fractional).
        stride_level0: level-0 pixels between neighbouring tiles.
        read_level: pyramid level read from.
        read_size: side of the box read at ``read_level``, in that level's pixels.
        mpp0: µm/px of level 0; target_mpp: µm/px of the tiles.
    """

    coords: np.ndarray
    tissue_fraction: np.ndarray
    tile_size: int
    patch_size_level0: float
    stride_level0: float
    read_level: int
    read_size: int
    mpp0: float
    target_mpp: float
    overlap: int = 0

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def coord_attrs(self, slide_id: str, width: int, height: int) -> dict:
        """TRIDENT-style attributes of the ``coords`` dataset (DESIGN.md)."""
        return {
            "patch_size": int(self.tile_size),
            "patch_size_level0": int(round(self.patch_size_level0)),
            "level0_magnification": round(10.0 / self.mpp0, 4),  # 0.25 µm/px ~ 40x
            "target_magnification": round(10.0 / self.target_mpp, 4),
            "overlap": int(self.overlap),
            "level0_width": int(width),
            "level0_height": int(height),
            "name": slide_id,
        }


def choose_level(downsamples: tuple[float, ...], scale: float) -> int:
    """Index of the coarsest level whose downsample does not exceed ``scale`` (level 0 if none does)."""
    best = 0
    for i, d in enumerate(downsamples):
        if d <= scale * (1 + 1e-6) and d >= downsamples[best]:
            best = i
    return best


def plan_tiles(
    dims: tuple[int, int],
    downsamples: tuple[float, ...],
    mpp0: float,
    params: TilingParams,
    tissue_mask: np.ndarray | None = None,
) -> TileGrid:
    """The full-tile grid over a slide, filtered by tissue.

    Args:
        dims: level-0 (width, height).
        downsamples: pyramid level downsamples (level 0 first).
        mpp0: µm per level-0 pixel.
        params: tiling settings.
        tissue_mask: (h, w) bool mask covering the whole slide (any scale: the scale is dims / mask shape);
            None keeps every tile.
    """
    width, height = dims
    scale = params.target_mpp / mpp0  # level-0 px per target px
    size0 = params.tile_size * scale
    stride0 = (params.tile_size - params.overlap) * scale
    nx = int(np.floor((width - size0) / stride0 + 1e-9)) + 1 if width >= size0 else 0
    ny = int(np.floor((height - size0) / stride0 + 1e-9)) + 1 if height >= size0 else 0
    gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    x0, y0 = gx.ravel() * stride0, gy.ravel() * stride0  # (N,) float level-0
    if tissue_mask is not None and len(x0):
        sx, sy = tissue_mask.shape[1] / width, tissue_mask.shape[0] / height
        frac = box_coverage(tissue_mask, x0 * sx, y0 * sy, (x0 + size0) * sx, (y0 + size0) * sy)
    else:
        frac = np.ones(len(x0))
    keep = frac >= params.min_tissue if tissue_mask is not None else np.ones(len(x0), bool)
    if tissue_mask is not None:
        keep &= frac > 0
    coords = np.stack([np.rint(x0[keep]), np.rint(y0[keep])], axis=1).astype(np.int64).reshape(-1, 2)
    level = choose_level(tuple(downsamples), scale)
    read_size = max(1, int(round(size0 / downsamples[level])))
    return TileGrid(
        coords, frac[keep], params.tile_size, size0, stride0, level, read_size, mpp0, params.target_mpp, params.overlap
    )
