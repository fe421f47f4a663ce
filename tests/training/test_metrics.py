"""Metrics: macro-F1 and balanced accuracy are not accuracy on imbalanced data."""

from __future__ import annotations

import numpy as np
import pytest

from acmil.training.metrics import metric_values


def test_macro_f1_differs_from_accuracy_on_imbalanced_set() -> None:
    # 9 negatives, 1 positive; the classifier calls everything negative.
    targets = np.array([0] * 9 + [1])
    probs = np.tile([0.8, 0.2], (10, 1)).astype(np.float32)
    probs[-1] = [0.6, 0.4]  # the positive still ranks highest: AUC 1
    m = metric_values(probs, targets, 2)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((2 * 0.9 / 1.9 + 0.0) / 2, abs=1e-6)  # F1 of class 0 = 18/19, class 1 = 0
    assert m["auc"] == pytest.approx(1.0)
    assert m["f1_macro"] < m["accuracy"] - 0.4


def test_multiclass_auc_is_macro_one_vs_rest() -> None:
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 20)
    probs = rng.dirichlet([1, 1, 1], size=60).astype(np.float32)
    probs[np.arange(60), targets] += 2.0  # perfectly separable
    probs /= probs.sum(1, keepdims=True)
    m = metric_values(probs, targets, 3)
    assert m["auc"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(1.0)
    assert metric_values(probs[:0], targets[:0], 3) == {}


def test_selection_breaks_ties_by_validation_loss_only() -> None:
    import torch

    from acmil.training.module import selection_score

    t = torch.tensor
    # equal F1 + AUC: the lower loss wins
    assert selection_score(t(1.0), t(1.0), t(0.05)) > selection_score(t(1.0), t(1.0), t(0.6))
    # a real difference in F1 + AUC is never overturned by the loss
    assert selection_score(t(0.9), t(1.0), t(5.0)) > selection_score(t(0.9), t(0.9995), t(0.0))
