"""DeLong's test against a case worked out by hand, scikit-learn's AUC and a bootstrap variance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from acmil.evaluation.bootstrap import bootstrap_indices
from acmil.evaluation.delong import delong_covariance, delong_test
from acmil.evaluation.metrics import binary_auc

# Positives and negatives of a hand-worked example (placements psi: 1 above, 1/2 tie, 0 below).
#   model A: positives 0.8 0.6 0.4, negatives 0.5 0.2 -> V10 = [1, 1, 1/2], V01 = [2/3, 1], AUC = 5/6
#   model B: positives 0.8 0.5 0.3, negatives 0.5 0.4 -> V10 = [1, 3/4, 0], V01 = [1/2, 2/3], AUC = 7/12
#   S10 = cov of the V10 rows (ddof 1) = [[1/12, 7/48], [7/48, 13/48]];  S01 = [[1/18, 1/36], [1/36, 1/72]]
#   cov = S10 / 3 + S01 / 2 = [[1/18, 1/16], [1/16, 7/72]];  var(A - B) = 1/18 + 7/72 - 2/16 = 1/36
#   z = (5/6 - 7/12) / (1/6) = 1.5, p = 2 (1 - Phi(1.5)) = 0.1336
POSITIVE = np.array([1, 1, 1, 0, 0], dtype=bool)
SCORES_A = np.array([0.8, 0.6, 0.4, 0.5, 0.2])
SCORES_B = np.array([0.8, 0.5, 0.3, 0.5, 0.4])


def test_delong_covariance_of_the_hand_worked_example() -> None:
    aucs, cov = delong_covariance(np.stack([SCORES_A, SCORES_B]), POSITIVE)
    assert aucs == pytest.approx([5 / 6, 7 / 12])
    assert cov == pytest.approx(np.array([[1 / 18, 1 / 16], [1 / 16, 7 / 72]]))


def test_delong_test_of_the_hand_worked_example() -> None:
    result = delong_test(SCORES_A, SCORES_B, POSITIVE)
    assert result.difference == pytest.approx(0.25)
    assert result.std_error == pytest.approx(1 / 6)
    assert result.z == pytest.approx(1.5)
    assert result.p_value == pytest.approx(2 * norm.sf(1.5)) and result.p_value == pytest.approx(0.1336, abs=1e-4)
    assert result.ci_low == pytest.approx(0.25 - 1.959964 / 6, abs=1e-6)


def test_delong_auc_equals_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.4
    scores = np.round(rng.normal(size=200) + positive, 1)  # rounded: many ties
    aucs, _ = delong_covariance(scores, positive)
    assert aucs[0] == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


def test_delong_variance_agrees_with_a_bootstrap_estimate() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.5
    signal = rng.normal(size=300) + 1.2 * positive
    a = signal + rng.normal(scale=0.6, size=300)
    b = signal + rng.normal(scale=1.0, size=300)  # correlated with a through the shared signal
    _, cov = delong_covariance(np.stack([a, b]), positive)
    draws = []
    for idx in bootstrap_indices(300, n_boot=2000, seed=0):
        if positive[idx].all() or not positive[idx].any():
            continue
        draws.append([binary_auc(a[idx], positive[idx]), binary_auc(b[idx], positive[idx])])
    boot_cov = np.cov(np.array(draws).T)
    assert cov[0, 0] == pytest.approx(boot_cov[0, 0], rel=0.15)
    assert cov[1, 1] == pytest.approx(boot_cov[1, 1], rel=0.15)
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    boot_var_diff = boot_cov[0, 0] + boot_cov[1, 1] - 2 * boot_cov[0, 1]
    assert var_diff == pytest.approx(boot_var_diff, rel=0.2)


def test_identical_models_give_no_difference() -> None:
    result = delong_test(SCORES_A, SCORES_A, POSITIVE)
    assert result.difference == 0.0 and result.p_value == 1.0


def test_too_few_slides_of_a_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
        delong_test(SCORES_A[:4], SCORES_B[:4], np.array([1, 0, 0, 0], dtype=bool))


def test_delong_interval_of_a_published_example() -> None:
    # The pAUC package's README (https://pypi.org/project/pauc/0.1.7/, DeLong's method) prints, for these
    # 12 slides, "AUC: 0.708, 95% CI: (0.378, 1.000)" (its upper bound clipped at 1).
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    scores = np.array([0.1, 0.35, 0.24, 0.8, 0.2, 0.85, 0.13, 0.85, 0.74, 0.58, 0.71, 0.25])
    aucs, cov = delong_covariance(scores, y)
    half = norm.ppf(0.975) * np.sqrt(cov[0, 0])
    assert round(aucs[0], 3) == 0.708
    assert round(aucs[0] - half, 3) == 0.378 and aucs[0] + half > 1.0
