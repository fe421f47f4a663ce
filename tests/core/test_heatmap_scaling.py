"""The default heatmap look (acmil.heatmap.DEFAULT_*): log scaling, and low scores not drawn."""

from __future__ import annotations

import numpy as np
import pytest

from acmil import heatmap
from acmil.analysis.heatmaps import build_parser


def _softmax_bag(n: int = 400, hot: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Attention as a model gives it: softmax of logits, a few tiles ("tumour") with much higher logits."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, n)
    rows = rng.choice(n, hot, replace=False)
    logits[rows] += rng.uniform(4, 8, hot)  # the tumour tiles differ in how strongly they are attended
    scores = np.exp(logits - logits.max())
    return scores / scores.sum(), rows


def test_log_scaling_draws_the_attended_region_and_keeps_the_rest_quiet():
    scores, rows = _softmax_bag()
    tumour = np.zeros(scores.size, bool)
    tumour[rows] = True
    log = heatmap.normalise_scores(scores, "log")
    cut = heatmap.DEFAULT_TRANSPARENT_BELOW
    assert (log[tumour] >= cut).mean() >= 0.8 and (log[~tumour] >= cut).mean() < 0.05
    # min-max lights the strongest few only; rank lights half the slide whatever it holds
    assert (heatmap.normalise_scores(scores, "minmax")[tumour] >= cut).mean() < 0.5
    assert (heatmap.normalise_scores(scores, "rank")[~tumour] >= cut).mean() > 0.4
    assert log.min() == 0.0 and log.max() == 1.0 and (log == 0).mean() >= 0.49  # the less attended half: 0
    assert heatmap.DEFAULT_NORMALISATION == "log" and heatmap.normalise_scores(scores).tolist() == log.tolist()


def test_log_scaling_edge_cases():
    assert heatmap.normalise_scores(np.full(5, 0.2), "log").tolist() == [0.5] * 5
    assert heatmap.normalise_scores(np.array([0.0, 1e-3, 1.0]), "log").tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="NaN or inf"):
        heatmap.normalise_scores(np.array([np.nan, 1.0]), "log")


def test_low_scores_show_the_background_and_the_fade_has_no_hard_edge():
    coords = np.array([[0, 0], [100, 0], [200, 0]])
    scores = np.array([1e-6, 1e-2, 1.0])  # log-scaled: 0 (median and below), 0.5.., 1
    background = heatmap.Image.new("RGB", (300, 100), (10, 200, 10))
    image = np.asarray(
        heatmap.render_heatmap(
            coords,
            scores,
            100,
            (300, 100),
            background=background,
            max_size=None,
            transparent_below=heatmap.DEFAULT_TRANSPARENT_BELOW,
        )
    )
    assert (image[50, 50] == (10, 200, 10)).all()  # the least attended tile: background only
    assert not (image[50, 250] == (10, 200, 10)).all()  # the most attended tile is drawn
    assert heatmap.fade(np.array([0.49, 0.5, 0.55, 0.6, 1.0]), 0.5).tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert heatmap.fade(np.array([0.0, 0.3]), 0.0).tolist() == [1.0, 1.0]


def test_acmil_heatmap_defaults_are_the_viewers():
    args = build_parser().parse_args(["--checkpoint", "c", "--features", "f", "--out", "o"])
    assert (args.normalisation, args.cmap, args.smoothing, args.transparent_below) == (
        heatmap.DEFAULT_NORMALISATION,
        heatmap.DEFAULT_CMAP,
        heatmap.DEFAULT_SMOOTHING,
        heatmap.DEFAULT_TRANSPARENT_BELOW,
    )
    assert heatmap.scaling_label() == (
        "log attention, from the slide's median tile (0) to its most attended tile (1); "
        "below 0.4 not drawn; smoothed over 0.5 tile"
    )
