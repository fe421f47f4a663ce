"""ROC and precision-recall curves per class with a bootstrap band, on fixed grids so resamples can be
stacked: TPR at 101 false-positive rates, interpolated precision (the best precision at a recall at least
as high) at 101 recalls, both read off the step curves without interpolating across a step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class CurveBand:
    """One class's curve (y at ``GRID``; the exact curve in curve_x, curve_y) with the pointwise bootstrap band
    and its AUC / average precision."""

    class_name: str
    x: np.ndarray
    y: np.ndarray
    curve_x: np.ndarray
    curve_y: np.ndarray
    low: np.ndarray
    high: np.ndarray
    area: float
    prevalence: float


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The empirical ROC curve (fpr, tpr), or None without both classes."""
    from sklearn.metrics import roc_curve

    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return fpr, tpr


def pr_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Recall (increasing) and interpolated precision (the best precision at a recall at least as high)."""
    from sklearn.metrics import precision_recall_curve

    if not positive.any():
        return None
    precision, recall, _ = precision_recall_curve(positive, scores)
    envelope = np.maximum.accumulate(precision)  # recall decreases along the arrays
    return recall[::-1], envelope[::-1]


def on_grid(kind: str, points: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The step curve at GRID, without interpolating across steps: ROC takes the highest TPR at a
    false-positive rate <= x, PR the interpolated precision at the lowest recall >= x."""
    x, y = points
    if kind == "roc":
        return y[np.searchsorted(x, GRID, side="right") - 1]
    return y[np.minimum(np.searchsorted(x, GRID, side="left"), len(x) - 1)]


def class_curves(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    indices: list[np.ndarray],
    kind: str = "roc",
    level: float = 0.95,
) -> list[CurveBand]:
    """One band per class (only the second class for a binary task), over the bootstrap ``indices``."""
    from sklearn.metrics import average_precision_score

    from .metrics import binary_auc

    points_of = roc_points if kind == "roc" else pr_points
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    tail = 100.0 * (1.0 - level) / 2.0
    bands = []
    for c in classes:
        scores, positive = probs[:, c], targets == c
        points = points_of(scores, positive)
        if points is None:
            continue
        draws = [on_grid(kind, p) for idx in indices if (p := points_of(scores[idx], positive[idx])) is not None]
        point = on_grid(kind, points)
        low, high = np.percentile(np.stack(draws), [tail, 100.0 - tail], axis=0) if draws else (point, point)
        area = binary_auc(scores, positive) if kind == "roc" else float(average_precision_score(positive, scores))
        bands.append(
            CurveBand(class_names[c], GRID, point, points[0], points[1], low, high, area, float(positive.mean()))
        )
    return bands
