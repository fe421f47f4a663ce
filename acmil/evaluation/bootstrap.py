"""Seeded bootstrap: resample slides, or whole cases when case ids are given (slides of one patient are not
independent, so a case is drawn with all its slides), and percentile confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .metrics import METRIC_NAMES, point_metrics

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


def bootstrap_indices(
    n: int, n_boot: int = DEFAULT_RESAMPLES, seed: int = 0, groups: Sequence[str] | None = None
) -> list[np.ndarray]:
    """``n_boot`` index arrays into ``n`` items, drawn with replacement from ``np.random.default_rng(seed)``.

    With ``groups`` (n,) (a case id per slide), cases are drawn and each brings all its slides, so a
    resample has as many cases as the data (and about as many slides).
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, size=n) for _ in range(n_boot)]
    if len(groups) != n:
        raise ValueError(f"{len(groups)} case ids for {n} slides")
    _, case_of = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    members = [np.flatnonzero(case_of == c) for c in range(case_of.max() + 1)]
    n_cases = len(members)
    return [np.concatenate([members[c] for c in rng.integers(0, n_cases, size=n_cases)]) for _ in range(n_boot)]


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The (low, high) percentiles of the finite ``values``; NaNs when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    indices: list[np.ndarray],
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]] = point_metrics,
) -> dict[str, np.ndarray]:
    """Each metric on each resample: {name: (n_boot,)} (NaN where undefined, e.g. a class missing)."""
    draws = [metric_fn(probs[idx], targets[idx]) for idx in indices]
    return {name: np.array([d[name] for d in draws], dtype=np.float64) for name in METRIC_NAMES}


def bootstrap_ci(
    probs: np.ndarray,
    targets: np.ndarray,
    groups: Sequence[str] | None = None,
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, dict[str, float]]:
    """Point value and percentile CI of every metric: {name: {"value", "low", "high", "n_valid"}}.

    ``n_valid`` counts the resamples where the metric was defined (AUC needs every class present).
    """
    values = point_metrics(probs, targets)
    draws = bootstrap_metrics(probs, targets, bootstrap_indices(len(targets), n_boot, seed, groups))
    out = {}
    for name in METRIC_NAMES:
        low, high = percentile_interval(draws[name], level)
        out[name] = {"value": values[name], "low": low, "high": high, "n_valid": int(np.isfinite(draws[name]).sum())}
    return out
