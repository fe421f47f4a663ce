"""DeLong's test for correlated ROC AUCs, in the fast O(n log n) form of Sun & Xu (2014) with midranks.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver operating
characteristic curves: a nonparametric approach"; Sun & Xu (2014), "Fast implementation of DeLong's
algorithm for comparing the areas under correlated receiver operating characteristic curves".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .metrics import midranks


def delong_covariance(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their covariance (k, k) for k score vectors ``scores`` (k, n) on the same slides.

    ``positive`` (n,) is boolean. Placement values: V10 (per positive: share of negatives scored below it,
    ties counted one half) and V01 (per negative: share of positives scored above it);
    cov = S10 / m + S01 / n with S the sample covariances (ddof 1) of the placements across models.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positive = np.asarray(positive, dtype=bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs at least 2 positive and 2 negative slides (got {m} and {n})")
    x, y = scores[:, positive], scores[:, ~positive]  # (k, m), (k, n)
    k = scores.shape[0]
    tx = np.stack([midranks(x[r]) for r in range(k)])
    ty = np.stack([midranks(y[r]) for r in range(k)])
    tz = np.stack([midranks(np.concatenate([x[r], y[r]])) for r in range(k)])
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # (k, m): negatives below each positive
    v01 = 1.0 - (tz[:, m:] - ty) / m  # (k, n): positives above each negative
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


@dataclass
class DeLongResult:
    """Paired DeLong test of AUC_a - AUC_b (two-sided, normal approximation)."""

    auc_a: float
    auc_b: float
    difference: float
    std_error: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, positive: np.ndarray, level: float = 0.95) -> DeLongResult:
    """Compare two models' scores (n,) on the same slides for the boolean truth ``positive`` (n,)."""
    from scipy.stats import norm

    positive = np.asarray(positive, dtype=bool)
    aucs, cov = delong_covariance(np.stack([scores_a, scores_b]), positive)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    else:  # identical placements: no evidence of a difference (or an exactly certain one)
        z, p = (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    return DeLongResult(
        float(aucs[0]),
        float(aucs[1]),
        diff,
        se,
        float(z),
        p,
        diff - half,
        diff + half,
        int(positive.sum()),
        int((~positive).sum()),
    )
