"""acmil.heatmap: normalisation, rasterisation, blending, DeepZoom alignment, and a slide-sized grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from acmil.heatmap import (
    DeepZoomOverlay,
    colormap_lut,
    normalise_scores,
    output_size,
    overlay_max_size,
    rasterise,
    render_heatmap,
    render_overlay,
)


def test_rank_normalisation_spreads_skewed_scores_evenly():
    scores = np.array([1e-6, 1e-5, 0.5, 1e-4, 0.9])
    assert np.allclose(normalise_scores(scores, "rank"), [0.0, 0.25, 0.75, 0.5, 1.0])
    assert np.allclose(normalise_scores(scores, "percentile"), normalise_scores(scores, "rank"))


def test_rank_ties_share_their_mean_rank_like_scipy():
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.integers(0, 8, size=int(rng.integers(2, 40))).astype(float)  # many ties
        expected = (rankdata(scores) - 1) / (scores.size - 1)
        assert np.allclose(normalise_scores(scores, "rank"), expected)


def test_minmax_normalisation_is_linear():
    assert np.allclose(normalise_scores(np.array([2.0, 4.0, 3.0]), "minmax"), [0.0, 1.0, 0.5])


@pytest.mark.parametrize("method", ["rank", "minmax"])
def test_constant_and_single_scores_map_to_half(method):
    assert np.allclose(normalise_scores(np.full(4, 0.25), method), 0.5)
    assert np.allclose(normalise_scores(np.array([3.0]), method), 0.5)


def test_normalisation_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise_scores(np.ones(3), "zscore")
    with pytest.raises(ValueError, match="NaN"):
        normalise_scores(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        normalise_scores(np.ones((2, 2)))


def test_rasterise_places_each_tile_exactly_and_averages_overlaps():
    coords = np.array([[0, 0], [10, 0], [5, 0]])
    value, covered = rasterise(coords, np.array([0.0, 1.0, 0.5]), 10, (40, 20), (40, 20))
    assert covered[:10, :20].all() and not covered[10:].any() and not covered[:, 20:].any()
    assert np.allclose(value[0, :5], 0.0)  # tile 0 alone
    assert np.allclose(value[0, 5:10], 0.25)  # tiles 0 and 2
    assert np.allclose(value[0, 10:15], 0.75)  # tiles 1 and 2
    assert np.allclose(value[0, 15:20], 1.0)  # tile 1 alone


def test_rasterise_downscales_and_drops_tiles_outside_the_slide():
    coords = np.array([[0, 0], [90, 90], [500, 500]])
    value, covered = rasterise(coords, np.array([0.2, 0.8, 1.0]), 10, (100, 100), (10, 10))
    assert covered.sum() == 2 and covered[0, 0] and covered[9, 9]
    assert value[9, 9] == pytest.approx(0.8)


def test_output_size_keeps_aspect_ratio():
    assert output_size((4000, 2000), 1000) == (1000, 500)
    assert output_size((300, 200), 1000) == (300, 200)
    assert output_size((300, 200), None) == (300, 200)


def test_heatmap_leaves_background_untouched_where_there_are_no_tiles():
    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8))
    coords = np.array([[0, 0], [40, 0], [0, 40]])
    image = render_heatmap(coords, np.array([0.1, 0.5, 0.9]), 40, (400, 200), background, max_size=200, alpha=0.5)
    assert image.size == (200, 100) and image.mode == "RGB"
    out, bg = np.asarray(image), np.asarray(background)
    _, covered = rasterise(coords, np.zeros(3), 40, (400, 200), (200, 100))
    assert np.array_equal(out[~covered], bg[~covered])
    assert (out[covered] != bg[covered]).any(axis=-1).mean() > 0.9


def test_blank_canvas_and_colormap_extremes():
    coords = np.array([[0, 0], [10, 0]])
    image = np.asarray(render_heatmap(coords, np.array([0.0, 1.0]), 10, (30, 10), None, alpha=1.0, cmap="viridis"))
    lut = colormap_lut("viridis")
    assert (image[:, 20:] == 255).all()  # white canvas outside the tiles
    assert np.array_equal(image[5, 2], lut[0]) and np.array_equal(image[5, 12], lut[255])


def test_smoothing_keeps_the_covered_area_and_softens_edges():
    g = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2) * 16
    scores = (g[:, 0] >= 160).astype(float)  # a sharp left/right step
    _, covered = rasterise(g, scores, 16, (320, 320), (320, 320))
    sharp, _ = rasterise(g, scores, 16, (320, 320), (320, 320))
    smooth, smooth_cov = rasterise(g, scores, 16, (320, 320), (320, 320), smoothing_sigma=1.0)
    assert np.array_equal(smooth_cov, covered)
    assert set(np.unique(sharp)) == {0.0, 1.0}
    assert 0.2 < smooth[100, 160] < 0.8 and smooth[100, 5] < 0.05 and smooth[100, 315] > 0.95


def test_bad_arguments_raise_clear_errors():
    coords = np.zeros((3, 2))
    with pytest.raises(ValueError, match="unknown colormap"):
        render_heatmap(coords, np.ones(3), 10, (100, 100), cmap="no-such-map")
    with pytest.raises(ValueError, match="scores must be"):
        render_heatmap(coords, np.ones(4), 10, (100, 100))
    with pytest.raises(ValueError, match="alpha"):
        render_heatmap(coords, np.ones(3), 10, (100, 100), alpha=2)
    with pytest.raises(ValueError, match="patch_size_level0"):
        render_heatmap(coords, np.ones(3), 0, (100, 100))


def test_overlay_is_transparent_outside_tiles():
    overlay = np.asarray(render_overlay(np.array([[0, 0]]), np.array([1.0]), 50, (100, 100), alpha=0.8))
    assert overlay.shape == (100, 100, 4)
    assert (overlay[:50, :50, 3] == 204).all() and (overlay[50:, :, 3] == 0).all()
    assert overlay_max_size((100_000, 50_000), 256) == 3125


def test_deepzoom_overlay_matches_openslide_tiling(shared_slides):
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    with OpenSlide(shared_slides / "CMU-1-Small-Region.svs") as slide:
        dz = DeepZoomGenerator(slide, tile_size=254, overlap=1)
        overlay = DeepZoomOverlay(Image.new("RGBA", (100, 100)), slide.dimensions, 254, 1)
        assert overlay.level_count == dz.level_count
        assert tuple(overlay.level_tiles) == dz.level_tiles
        for level in range(dz.level_count):
            cols, rows = dz.level_tiles[level]
            for col in range(cols):
                for row in range(rows):
                    location, slide_level, size = dz.get_tile_coordinates(level, (col, row))
                    box, tile_size = overlay.tile_region(level, col, row)
                    assert tile_size == dz.get_tile_dimensions(level, (col, row))
                    assert box[:2] == location and slide_level == 0
                    assert (box[2] - box[0], box[3] - box[1]) == size


def test_deepzoom_overlay_tile_content_and_bounds():
    overlay = render_overlay(np.array([[0, 0]]), np.array([1.0]), 500, (1000, 600), max_size=100)
    dz = DeepZoomOverlay(overlay, (1000, 600), tile_size=256, overlap=0)
    top = dz.get_tile(dz.level_count - 1, 0, 0)  # level-0 pixels (0..256)^2: inside the tile
    assert top.size == (256, 256) and np.asarray(top)[..., 3].min() > 0
    far = np.asarray(dz.get_tile(dz.level_count - 1, 3, 2))  # (768.., 512..): no tile there
    assert far.shape[:2] == (600 - 512, 1000 - 768) and far[..., 3].max() == 0
    assert 'Width="1000"' in dz.get_dzi()
    with pytest.raises(ValueError, match="invalid address"):
        dz.get_tile(dz.level_count - 1, 9, 9)


def test_50000_tiles_render_at_the_capped_size_and_cover_the_grid():
    """A slide-sized grid (250 x 200 tiles) squeezed into 2048 px. How fast: ``benchmarks/bench_service.py
    --parts heatmap`` (heatmap_render, against a per-tile loop), not asserted here, where a busy machine fails it."""
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(np.arange(250), np.arange(200)), -1).reshape(-1, 2) * 256
    scores = rng.random(len(grid))
    image = render_heatmap(grid, scores, 256, (64000, 51200), max_size=2048)
    assert image.size == output_size((64000, 51200), 2048) == (2048, 1638)
    _, covered = rasterise(grid, scores, 256, (64000, 51200), image.size)
    assert covered.all()  # the tiles tile the whole slide: no gap at 8 output px per tile
    assert not (np.asarray(image) == 255).all(axis=-1).any()  # no pixel left as the white canvas
