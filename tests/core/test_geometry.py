"""acmil.geometry: the one home of units and slide geometry (MPP, extensions, mask coverage, extent, ranks)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from acmil import geometry
from acmil.geometry import (
    MPP_RANGE,
    box_coverage,
    is_slide_file,
    level0_extent,
    plausible_mpp,
    rank_normalise,
    read_mask,
    tile_coverage,
)


def test_plausible_mpp_one_range() -> None:
    assert MPP_RANGE == (0.05, 20.0)
    assert plausible_mpp("0.25") == 0.25 and plausible_mpp(20.0) == 20.0
    # 352.8 is a 72-dpi default tag; 30 and 0.02 passed the service's old 0.01-50 range
    for bad in (352.8, 30.0, 0.02, float("nan"), float("inf"), None, "x", -1):
        assert plausible_mpp(bad) is None


def test_the_service_and_preprocessing_agree_on_mpp() -> None:
    from acmil.preprocessing.slide import mpp_from_properties
    from acmil.service.slides import _mpp

    for value in ("0.25", "30", "0.02", "352.8"):
        props = {"openslide.mpp-x": value, "openslide.mpp-y": value}
        assert (mpp_from_properties(props)[0] is None) == (_mpp(props) is None), value


def test_slide_extensions_shared() -> None:
    from acmil.analysis.heatmaps import find_slide  # noqa: F401 - imports the same set
    from acmil.preprocessing import discover
    from acmil.service import registry

    assert discover.SLIDE_EXTENSIONS is geometry.SLIDE_EXTENSIONS is registry.SLIDE_EXTENSIONS
    assert is_slide_file("a/B.SVS") and is_slide_file("x.czi") and is_slide_file("y.dcm")
    assert not is_slide_file("z.h5") and not is_slide_file("noext")


def test_find_slide_knows_every_extension(tmp_path) -> None:
    from acmil.analysis.heatmaps import find_slide

    (tmp_path / "s1.czi").write_bytes(b"")  # the analyses did not know .czi / .dcm before
    (tmp_path / "s2.DCM").write_bytes(b"")
    assert find_slide(tmp_path, "s1").name == "s1.czi"
    assert find_slide(tmp_path, "s2").name == "s2.DCM"
    assert find_slide(tmp_path, "s3") is None


def test_box_coverage() -> None:
    m = np.zeros((10, 10), bool)
    m[:, :5] = True
    frac = box_coverage(m, np.array([0, 3, 8, -4]), np.zeros(4), np.array([4, 7, 12, 0]), np.full(4, 4))
    assert frac.tolist() == [1.0, 0.5, 0.0, 0.0]


def test_tile_coverage_rounds_edges_to_the_nearest_mask_pixel() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:4, 0:4] = True  # level-0 square [0, 64) at downsample 16
    coords = np.array([[0, 0], [48, 0], [40, 0], [56, 0], [1000, 1000], [-5000, -5000]])
    got = tile_coverage(mask, coords, 32, 16)
    # [40, 72) -> mask px [2.5, 4.5) -> px 3..4 (centres 3.5, 4.5 inside), half in; [56, 88) -> px 4..5, out
    np.testing.assert_allclose(got, [1.0, 0.5, 0.5, 0.0, 0.0, 0.0])


def test_tile_coverage_is_area_weighted_over_a_full_grid() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((24, 32)) > 0.5
    grid = np.array([[x, y] for y in range(0, 24 * 16, 64) for x in range(0, 32 * 16, 64)])
    assert tile_coverage(mask, grid, 64, 16).mean() == pytest.approx(mask.mean())
    with pytest.raises(ValueError, match="downsample"):
        tile_coverage(mask, grid, 64, 0)


def test_the_three_former_copies_agree() -> None:
    from acmil.analysis.masks import tile_fractions
    from acmil.synthetic.slides import tumour_fraction

    rng = np.random.default_rng(2)
    mask = rng.random((30, 40)) > 0.4
    coords = rng.integers(-100, 700, size=(200, 2))
    expected = tile_coverage(mask, coords, 50, 16)
    np.testing.assert_array_equal(tile_fractions(mask, coords, 50, 16), expected)
    np.testing.assert_array_equal(tumour_fraction(mask, coords, 50, 16), expected)


def test_read_mask_threshold_and_downsample(tmp_path) -> None:
    arr = np.zeros((2, 3), dtype=np.uint8)
    arr[0, 0], arr[1, 2] = 1, 255  # a label mask's class 1 counts (the synthetic reader used > 127)
    info = PngImagePlugin.PngInfo()
    info.add_text("acmil_downsample", "32")
    Image.fromarray(arr).save(tmp_path / "m.png", pnginfo=info)
    mask, down = read_mask(tmp_path / "m.png")
    assert mask.tolist() == [[True, False, False], [False, False, True]] and down == 32.0

    from acmil.synthetic.slides import read_mask as synthetic_read_mask

    assert synthetic_read_mask(tmp_path / "m.png")[0].tolist() == mask.tolist()

    Image.fromarray(arr).save(tmp_path / "plain.png")
    assert read_mask(tmp_path / "plain.png")[1] is None
    info = PngImagePlugin.PngInfo()
    info.add_text("acmil_downsample", "0")
    Image.fromarray(arr).save(tmp_path / "zero.png", pnginfo=info)
    with pytest.raises(ValueError, match="zero.png"):
        read_mask(tmp_path / "zero.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_mask(tmp_path / "bad.png")


def test_level0_extent() -> None:
    coords = np.array([[0, 0], [512, 256]])
    assert level0_extent({"level0_width": 1000, "level0_height": 800}, coords, 256) == (1000, 800)
    assert level0_extent({}, coords, 256) == (768, 512)
    with pytest.raises(ValueError, match="extent"):
        level0_extent({}, np.zeros((0, 2)), 256)


def test_rank_normalise_matches_mean_ranks() -> None:
    ranks = rank_normalise(np.array([3.0, 1.0, 1.0, 2.0]))
    np.testing.assert_allclose(ranks, [1.0, 1 / 6, 1 / 6, 2 / 3])  # the tie shares mean rank 0.5
    assert rank_normalise(np.array([7.0])).tolist() == [0.5]
    assert rank_normalise(np.array([])).shape == (0,)


def test_umap_rank_shares_ties() -> None:
    from acmil.analysis.umap_plot import within_slide_rank

    assert within_slide_rank(np.array([0.2, 0.2, 0.9])).tolist() == [0.25, 0.25, 1.0]  # was [0, 0.5, 1]
    assert within_slide_rank(np.array([0.3])).tolist() == [1.0]
