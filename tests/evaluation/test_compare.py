"""The comparison on prediction sets built in the test (no training): multi-class DeLong rows, paired bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from acmil.evaluation.compare import compare, format_table
from acmil.evaluation.io import PredictionSet


def _predictions(targets: np.ndarray, strength: float, seed: int, cases: list[str] | None = None) -> PredictionSet:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(targets), 3)) + strength * np.eye(3)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = [f"s{i}" for i in range(len(targets))]
    return PredictionSet(Path(f"model{seed}"), "test", ids, targets, probs, ["a", "b", "c"], cases)


def test_three_classes_delong_per_class_and_bootstrap_for_the_rest() -> None:
    targets = np.random.default_rng(0).integers(0, 3, 150)
    strong, weak = _predictions(targets, 2.5, 1), _predictions(targets, 0.3, 2)
    result = compare(strong, weak, ("strong", "weak"), n_boot=300, seed=0)
    delong_rows = [r for r in result["rows"] if r["test"] == "DeLong"]
    assert [r["metric"] for r in delong_rows] == [f"AUROC {c} vs rest" for c in "abc"]
    for c, row in enumerate(delong_rows):
        assert row["a"] == pytest.approx(roc_auc_score(targets == c, strong.probs[:, c]))
        assert row["p_value"] < 0.01 and row["ci_low"] > 0
    boot = {r["metric"]: r for r in result["rows"] if r["test"] == "paired bootstrap"}
    assert set(boot) == {"AUROC (macro OvR)", "balanced accuracy", "macro-F1", "accuracy"}
    macro = roc_auc_score(targets, strong.probs, multi_class="ovr") - roc_auc_score(
        targets, weak.probs, multi_class="ovr"
    )
    assert boot["AUROC (macro OvR)"]["difference"] == pytest.approx(macro)
    assert all(r["p_value"] < 0.01 for r in boot.values())
    assert "AUROC b vs rest" in format_table(result)


def test_paired_bootstrap_is_seeded_and_finds_no_difference_between_equals() -> None:
    targets = np.random.default_rng(3).integers(0, 3, 120)
    a, b = _predictions(targets, 1.0, 4), _predictions(targets, 1.0, 5)  # same strength, different noise
    first = compare(a, b, n_boot=300, seed=1)
    assert first == compare(a, b, n_boot=300, seed=1)
    accuracy = next(r for r in first["rows"] if r["metric"] == "accuracy")
    assert accuracy["p_value"] > 0.05 and accuracy["ci_low"] < 0 < accuracy["ci_high"]


def test_labels_that_differ_are_refused() -> None:
    targets = np.zeros(10, dtype=int)
    targets[5:] = 1
    a, b = _predictions(targets, 1.0, 6), _predictions(1 - targets, 1.0, 7)
    with pytest.raises(ValueError, match="label 10 shared slide"):
        compare(a, b)
