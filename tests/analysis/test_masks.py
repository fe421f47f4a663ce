"""Tile labels from masks: geometry against hand-computed cases, and the downsample's three sources."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from acmil.analysis.masks import mask_downsample, read_mask, tile_fractions, tile_labels
from acmil.features import SlideFeatures


def test_tile_fractions_hand_computed() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:4, 0:4] = True  # level-0 square [0, 64) at downsample 16
    coords = np.array([[0, 0], [32, 32], [64, 64], [48, 0], [1000, 1000]])
    got = tile_fractions(mask, coords, patch_size_level0=32, downsample=16)
    # whole tile in, whole in, out, half in (x 48..80 covers mask px 3..4 of which px 3 is in), outside image
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0, 0.5, 0.0])


def test_tile_fractions_match_a_pixel_loop() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((20, 30)) > 0.6
    coords = rng.integers(0, 300, size=(50, 2)) // 10 * 10
    got = tile_fractions(mask, coords, patch_size_level0=40, downsample=10)
    for (x, y), frac in zip(coords, got, strict=True):
        window = mask[y // 10 : y // 10 + 4, x // 10 : x // 10 + 4]
        assert frac == pytest.approx(window.sum() / 16.0)  # window clipped at the edge counts as area lost


def _slide(coord_attrs: dict) -> SlideFeatures:
    coords = np.array([[0, 0], [256, 0]], dtype=np.int64)
    return SlideFeatures("s", np.zeros((2, 4), np.float32), coords, {}, {"patch_size_level0": 256, **coord_attrs})


def test_downsample_sources(tmp_path) -> None:
    slide = _slide({"level0_width": 512, "level0_height": 256})
    assert mask_downsample((16, 32), slide) == pytest.approx(16.0)
    assert mask_downsample((16, 32), slide, downsample=8) == 8.0
    with pytest.raises(ValueError, match="aspect"):
        mask_downsample((32, 32), slide)
    with pytest.raises(ValueError, match="level0_width"):
        mask_downsample((16, 32), _slide({}))

    # A mask stating its downsample in the PNG wins over the inferred one.
    arr = np.zeros((2, 4), dtype=np.uint8)
    arr[:, 2:] = 255  # right half: the second tile at downsample 128
    info = PngImagePlugin.PngInfo()
    info.add_text("acmil_downsample", "128")
    Image.fromarray(arr).save(tmp_path / "s.png", pnginfo=info)
    mask, stated = read_mask(tmp_path / "s.png")
    assert stated == 128.0 and mask.shape == (2, 4)
    assert tile_labels(tmp_path, _slide({})).tolist() == [False, True]


def test_missing_and_unreadable_masks(tmp_path) -> None:
    slide = _slide({"level0_width": 512, "level0_height": 256})
    assert tile_labels(tmp_path, slide) is None
    assert tile_labels(tmp_path, slide, missing_is_negative=True).tolist() == [False, False]
    (tmp_path / "s.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"s\.png"):
        tile_labels(tmp_path, slide)
