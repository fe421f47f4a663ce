"""Calibration: reliability bins, expected calibration error, Brier score, and temperature scaling.

ECE uses the top-label confidence in ``n_bins`` equal-width bins over [0, 1] (right-closed, the first bin
also holds 0): ECE = sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|. The Brier score follows
scikit-learn's ``brier_score_loss``: mean (p_1 - y)^2 for two classes, mean sum_c (p_c - y_c)^2 otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_BINS = 15
_TINY = np.finfo(np.float32).tiny  # log() of a probability that underflowed to 0 in float32


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, list]:
    """Per bin: edges (n_bins + 1,), count, mean confidence and accuracy (None for an empty bin)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    nonzero = count > 0
    mean_conf = [float(conf_sum[b] / count[b]) if nonzero[b] else None for b in range(n_bins)]
    accuracy = [float(acc_sum[b] / count[b]) if nonzero[b] else None for b in range(n_bins)]
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    bins = reliability_bins(probs, targets, n_bins)
    n = max(int(np.sum(bins["count"])), 1)
    return float(
        sum(
            c / n * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True) if c
        )
    )


def brier_score(probs: np.ndarray, targets: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[targets]
    score = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return score / 2.0 if probs.shape[1] == 2 else score


def calibration_summary(probs: np.ndarray, targets: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """{"ece", "brier", "nll", "n_bins", "reliability": reliability_bins(...)}."""
    nll = float(-np.mean(np.log(np.maximum(probs[np.arange(len(targets)), targets], _TINY))))
    return {
        "ece": expected_calibration_error(probs, targets, n_bins),
        "brier": brier_score(probs, targets),
        "nll": nll,
        "n_bins": n_bins,
        "reliability": reliability_bins(probs, targets, n_bins),
    }


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """log p (n, C): logits up to a per-row constant, which the softmax ignores, so temperature scaling of
    probabilities equals temperature scaling of the logits they came from."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), _TINY))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) (n, C)."""
    z = log_probabilities(probs) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) (LBFGS over log T; Guo et al., 2017).

    ``logits`` (n, C) may be log-probabilities (see :func:`log_probabilities`). Returns 1.0 for no data.
    """
    import torch

    if len(targets) == 0:
        return 1.0
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    # A perfectly separated set drives T -> 0; bound it to a range a probability can still express.
    return float(np.clip(np.exp(log_t.item()), 1e-2, 1e2))
