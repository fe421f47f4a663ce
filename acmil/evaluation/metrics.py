"""Slide-level metrics in plain numpy, fast enough to recompute on a thousand bootstrap resamples.

Definitions follow scikit-learn (the tests compare against it): accuracy; balanced accuracy = mean recall
over the classes present in the targets; macro-F1 over the classes present in targets or predictions;
AUROC = macro one-vs-rest mean of per-class Mann-Whitney AUCs (ties count one half), undefined (NaN) when a
class has no positive or no negative slide.
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("auc", "balanced_accuracy", "f1_macro", "accuracy")
METRIC_LABELS = {
    "auc": "AUROC (macro OvR)",
    "balanced_accuracy": "balanced accuracy",
    "f1_macro": "macro-F1",
    "accuracy": "accuracy",
}


def check_inputs(probs: np.ndarray, targets: np.ndarray, n_classes: int | None = None) -> tuple[np.ndarray, ...]:
    """probs (n, C) float64 and targets (n,) int, or a ValueError naming what is wrong."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (n, C), got shape {probs.shape}")
    if targets.shape != (probs.shape[0],):
        raise ValueError(f"targets must be ({probs.shape[0]},) to match the probabilities, got {targets.shape}")
    if n_classes is not None and probs.shape[1] != n_classes:
        raise ValueError(f"probabilities have {probs.shape[1]} columns for {n_classes} classes")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or inf")
    targets = targets.astype(int)
    if targets.size and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(f"targets must lie in 0..{probs.shape[1] - 1}, got {targets.min()}..{targets.max()}")
    return probs, targets


def confusion(targets: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return np.bincount(targets * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (n,) with ties given the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Each run of equal values [start, end) gets rank (start + end + 1) / 2.
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [x.size]])
    ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` (n,) for the boolean ``positive`` (n,); NaN without both classes."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = midranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(probs: np.ndarray, targets: np.ndarray) -> float:
    """Macro one-vs-rest AUC; binary tasks reduce to the AUC of the second class's probability."""
    n_classes = probs.shape[1]
    if n_classes == 2:
        return binary_auc(probs[:, 1], targets == 1)
    aucs = [binary_auc(probs[:, c], targets == c) for c in range(n_classes)]
    return float("nan") if np.isnan(aucs).any() else float(np.mean(aucs))


def point_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy, macro-F1 and macro AUC of probs (n, C) against targets (n,)."""
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    cm = confusion(targets, predicted, n_classes)
    support, predicted_count, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    present = support > 0
    recall = hits[present] / support[present]
    labels = present | (predicted_count > 0)
    f1 = 2.0 * hits[labels] / (support[labels] + predicted_count[labels])  # 0 where a class has no hit
    return {
        "auc": macro_auc(probs, targets),
        "balanced_accuracy": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "accuracy": float(hits.sum() / targets.size),
    }
