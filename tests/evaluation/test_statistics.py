"""Every statistic against a known value: scikit-learn's, or a case worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, brier_score_loss, f1_score, roc_auc_score

from acmil.evaluation import summarise
from acmil.evaluation.bootstrap import bootstrap_ci, bootstrap_indices
from acmil.evaluation.calibration import brier_score, expected_calibration_error, reliability_bins
from acmil.evaluation.metrics import check_inputs, midranks, point_metrics


def _random_task(n: int, n_classes: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[targets]
    if ties:
        logits = np.round(logits)  # many tied scores
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


@pytest.mark.parametrize(("n_classes", "ties", "seed"), [(2, False, 0), (2, True, 1), (3, False, 2), (4, True, 3)])
def test_point_metrics_equal_scikit_learn(n_classes: int, ties: bool, seed: int) -> None:
    probs, targets = _random_task(80, n_classes, seed, ties)
    ours = point_metrics(probs, targets)
    predicted = probs.argmax(axis=1)
    auc = (
        roc_auc_score(targets, probs[:, 1])
        if n_classes == 2
        else roc_auc_score(targets, probs, multi_class="ovr", average="macro")
    )
    assert ours["auc"] == pytest.approx(auc, abs=1e-12)
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, predicted), abs=1e-12)
    assert ours["f1_macro"] == pytest.approx(f1_score(targets, predicted, average="macro"), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(accuracy_score(targets, predicted), abs=1e-12)


def test_metrics_match_scikit_learn_when_a_class_is_never_predicted() -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.1, 0], [0.6, 0.4, 0], [0.2, 0.8, 0], [0.7, 0.3, 0], [0.5, 0.3, 0.2], [0.3, 0.6, 0.1]])
    ours, predicted = point_metrics(probs, targets), probs.argmax(axis=1)
    assert ours["f1_macro"] == pytest.approx(f1_score(targets, predicted, average="macro", zero_division=0))
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, predicted))


def test_midranks_average_tied_ranks() -> None:
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_brier_equals_scikit_learn_binary_and_multiclass() -> None:
    for n_classes, seed in ((2, 4), (3, 5)):
        probs, targets = _random_task(50, n_classes, seed)
        expected = brier_score_loss(targets, probs[:, 1]) if n_classes == 2 else brier_score_loss(targets, probs)
        assert brier_score(probs, targets) == pytest.approx(expected, abs=1e-12)


def test_ece_of_a_hand_computed_case() -> None:
    # Binary, 5 bins of width 0.2 over the top-label confidence (always >= 0.5 here):
    #   confidences 0.55 0.58 (bin (0.4, 0.6]: one right)   -> |0.5 - 0.565| * 2/6 = 0.021667
    #   confidences 0.7 0.75 0.8 (bin (0.6, 0.8]: all right) -> |1.0 - 0.75| * 3/6  = 0.125
    #   confidence  0.95          (bin (0.8, 1.0]: wrong)     -> |0.0 - 0.95| * 1/6  = 0.158333
    probs1 = np.array([0.55, 0.42, 0.7, 0.25, 0.8, 0.95])  # probability of class 1
    targets = np.array([1, 1, 1, 0, 1, 0])
    probs = np.stack([1 - probs1, probs1], axis=1)
    expected = abs(0.5 - 0.565) * 2 / 6 + abs(1.0 - 0.75) * 3 / 6 + abs(0.0 - 0.95) * 1 / 6
    assert expected == pytest.approx(0.305)
    assert expected_calibration_error(probs, targets, n_bins=5) == pytest.approx(expected)
    bins = reliability_bins(probs, targets, n_bins=5)
    assert bins["count"] == [0, 0, 2, 3, 1]
    assert bins["accuracy"][2:] == pytest.approx([0.5, 1.0, 0.0])


def test_ece_is_zero_when_calibrated_in_every_bin() -> None:
    # 10 slides at confidence 0.8 with 8 right; 10 at 0.6 with 6 right.
    probs1 = np.array([0.8] * 10 + [0.6] * 10)
    targets = np.array([1] * 8 + [0] * 2 + [1] * 6 + [0] * 4)
    probs = np.stack([1 - probs1, probs1], axis=1)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_is_seeded_and_deterministic() -> None:
    probs, targets = _random_task(60, 2, 6)
    a = bootstrap_ci(probs, targets, n_boot=200, seed=3)
    assert a == bootstrap_ci(probs, targets, n_boot=200, seed=3)
    assert a != bootstrap_ci(probs, targets, n_boot=200, seed=4)
    for name, m in a.items():
        assert m["low"] <= m["value"] <= m["high"], name
        assert m["n_valid"] == 200


def test_bootstrap_ci_of_accuracy_matches_the_binomial_standard_error() -> None:
    probs, targets = _random_task(400, 2, 7)
    ci = bootstrap_ci(probs, targets, n_boot=1000, seed=0)["accuracy"]
    acc = ci["value"]
    half_width = 1.96 * np.sqrt(acc * (1 - acc) / len(targets))  # normal approximation of a proportion
    assert (ci["high"] - ci["low"]) / 2 == pytest.approx(half_width, rel=0.15)


def test_case_resampling_draws_whole_cases() -> None:
    groups = ["a", "a", "a", "b", "c", "c"]
    for idx in bootstrap_indices(6, n_boot=50, seed=0, groups=groups):
        drawn = [groups[i] for i in idx]
        for case in set(drawn):  # a case comes with all its slides, as many times as it was drawn
            assert drawn.count(case) % groups.count(case) == 0
        assert len(idx) in {d for d in range(3, 10)}


def test_case_resampling_widens_the_interval_of_correlated_slides() -> None:
    # 30 cases of 4 identical slides: resampling slides treats 120 slides as independent (too narrow).
    probs, targets = _random_task(30, 2, 8)
    probs, targets = np.repeat(probs, 4, axis=0), np.repeat(targets, 4)
    cases = np.repeat(np.arange(30), 4).astype(str)
    by_slide = bootstrap_ci(probs, targets, n_boot=500, seed=0)["accuracy"]
    by_case = bootstrap_ci(probs, targets, groups=cases, n_boot=500, seed=0)["accuracy"]
    assert (by_case["high"] - by_case["low"]) > 1.6 * (by_slide["high"] - by_slide["low"])


def test_summarise_returns_ci_calibration_and_confusion() -> None:
    probs, targets = _random_task(40, 3, 9)
    out = summarise(probs, targets, ["a", "b", "c"], case_ids=[str(i // 2) for i in range(40)], n_boot=100)
    assert out["ci"]["unit"] == "case" and out["ci"]["n_cases"] == 20 and out["ci"]["n_boot"] == 100
    assert set(out["ci"]["metrics"]) == {"auc", "balanced_accuracy", "f1_macro", "accuracy"}
    assert out["calibration"]["ece"] == pytest.approx(expected_calibration_error(probs, targets))
    assert np.sum(out["confusion_matrix"]["counts"]) == 40
    assert summarise(np.zeros((0, 3)), np.zeros(0, int), ["a", "b", "c"]) == {}


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="3 columns for 2 classes"):
        check_inputs(np.ones((4, 3)) / 3, np.zeros(4), 2)
    with pytest.raises(ValueError, match="NaN"):
        check_inputs(np.full((2, 2), np.nan), np.zeros(2))
    with pytest.raises(ValueError, match="0..1"):
        check_inputs(np.ones((2, 2)) / 2, np.array([0, 5]))


def test_roc_and_pr_grids_read_the_step_curves() -> None:
    from acmil.evaluation.curves import GRID, on_grid, pr_points, roc_points

    scores, positive = np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
    tpr = on_grid("roc", roc_points(scores, positive))  # steps: (0, .5) (.5, .5) (.5, 1) (1, 1)
    assert tpr[GRID < 0.5] == pytest.approx(0.5) and tpr[GRID >= 0.5] == pytest.approx(1.0)
    precision = on_grid("pr", pr_points(scores, positive))  # recall .5 at precision 1, recall 1 at 2/3
    assert precision[GRID <= 0.5] == pytest.approx(1.0) and precision[GRID > 0.5] == pytest.approx(2 / 3)


def test_bootstrap_band_holds_the_curve() -> None:
    from acmil.evaluation.curves import class_curves

    probs, targets = _random_task(300, 2, 10)
    band = class_curves(probs, targets, ["a", "b"], bootstrap_indices(300, 200, seed=0), "roc")[0]
    assert np.trapezoid(band.y, band.x) == pytest.approx(band.area, abs=0.01)  # the grid curve's area is the AUC
    assert np.mean((band.low <= band.y) & (band.y <= band.high)) > 0.95
    assert np.mean(band.high - band.low) < 0.25
