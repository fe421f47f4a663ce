"""Tissue segmentation and tile grids: pure functions on arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from acmil.preprocessing.tiling import TilingParams, choose_level, plan_tiles
from acmil.preprocessing.tissue import TissueParams, segment_tissue


def _thumb(h=200, w=300) -> np.ndarray:
    img = np.full((h, w, 3), 245, np.uint8)
    cv2.circle(img, (100, 100), 60, (220, 150, 190), -1)  # pink tissue
    cv2.circle(img, (100, 100), 12, (245, 245, 245), -1)  # a hole of ~450 px
    cv2.circle(img, (250, 30), 3, (200, 100, 170), -1)  # a speck of ~30 px
    return img


def test_segmentation_finds_tissue_drops_specks_and_fills_small_holes():
    mpp = 4.0  # one thumbnail px = 16 µm², so 0.01 mm² = 625 px
    mask, thr = segment_tissue(_thumb(), mpp, TissueParams(min_area_mm2=0.001, max_hole_mm2=0.0001))
    assert mask[100, 50] and not mask[5, 5] and thr >= TissueParams.min_saturation
    assert not mask[30, 250]  # speck (30 px < 62 px) removed
    assert not mask[100, 100]  # hole (450 px) larger than 0.0001 mm² (6 px): kept as background
    filled, _ = segment_tissue(_thumb(), mpp, TissueParams(min_area_mm2=0.001, max_hole_mm2=0.01))
    assert filled[100, 100]
    area = mask.sum() * mpp**2 / 1e6
    assert area == pytest.approx((np.pi * 60**2 - np.pi * 12**2) * 16 / 1e6, rel=0.1)


def test_blank_thumbnail_has_no_tissue():
    rng = np.random.default_rng(0)
    blank = np.clip(245 + rng.normal(0, 3, (100, 100, 3)), 0, 255).astype(np.uint8)
    assert not segment_tissue(blank, 4.0)[0].any()  # Otsu alone would split the noise


def test_fixed_threshold():
    mask, thr = segment_tissue(_thumb(), 4.0, TissueParams(threshold=200))
    assert thr == 200 and not mask.any()


def test_choose_level():
    downs = (1.0, 2.0, 4.016129032258064, 8.086312118570184)  # openslide-python-boxes.tiff
    assert choose_level(downs, 1.0) == 0
    assert choose_level(downs, 4.0) == 1  # 4.016 > 4: never read coarser than needed
    assert choose_level(downs, 4.02) == 2
    assert choose_level(downs, 100) == 3
    assert choose_level(downs, 0.5) == 0


def test_grid_at_exact_resolution():
    grid = plan_tiles((2220, 2967), (1.0,), 0.499, TilingParams(target_mpp=0.5, tile_size=256))
    assert grid.patch_size_level0 == pytest.approx(256 * 0.5 / 0.499)
    assert grid.read_level == 0 and grid.read_size == 257
    assert len(grid) == 8 * 11
    assert grid.coords[:, 0].max() + grid.patch_size_level0 <= 2220 + 0.5
    assert np.array_equal(np.unique(grid.coords[:, 0])[:3], np.rint(np.arange(3) * grid.patch_size_level0))
    attrs = grid.coord_attrs("s", 2220, 2967)
    assert attrs["patch_size"] == 256 and attrs["patch_size_level0"] == 257
    assert attrs["target_magnification"] == 20 and attrs["level0_magnification"] == pytest.approx(20.04, abs=0.01)


def test_grid_reads_from_coarser_level_and_overlaps():
    grid = plan_tiles((4096, 4096), (1.0, 4.0, 16.0), 0.25, TilingParams(target_mpp=2.0, tile_size=128, overlap=64))
    assert grid.read_level == 1 and grid.read_size == 256  # 128 px at 2 µm/px = 1024 level-0 px
    assert grid.stride_level0 == pytest.approx(512)
    assert len(grid) == 7 * 7


def test_grid_keeps_tissue_tiles_only():
    mask = np.zeros((40, 40), bool)  # one mask px = 10 level-0 px
    mask[:20, :20] = True
    grid = plan_tiles((400, 400), (1.0,), 1.0, TilingParams(target_mpp=1.0, tile_size=100, min_tissue=0.5), mask)
    assert sorted(map(tuple, grid.coords.tolist())) == [(0, 0), (0, 100), (100, 0), (100, 100)]
    assert np.allclose(grid.tissue_fraction, 1.0)
    none = plan_tiles((400, 400), (1.0,), 1.0, TilingParams(target_mpp=1.0, tile_size=100), np.zeros((40, 40), bool))
    assert len(none) == 0 and none.coords.shape == (0, 2)


def test_bad_tiling_params():
    with pytest.raises(ValueError, match="overlap"):
        TilingParams(target_mpp=0.5, tile_size=256, overlap=256)
