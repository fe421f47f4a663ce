"""The one entry point training, testing and cross-validation call: confidence intervals and calibration
of a split's probabilities, as a JSON-ready dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_ci
from .calibration import DEFAULT_BINS, apply_temperature, calibration_summary
from .metrics import check_inputs, confusion


def summarise(
    probs: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    case_ids: Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    n_bins: int = DEFAULT_BINS,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Bootstrap CIs, calibration and the confusion matrix of probs (n, C) against targets (n,).

    Args:
        case_ids: (n,) patient of each slide; resampling then draws cases (with all their slides).
        temperature: the model card's temperature, if any; calibration is then also reported after scaling.

    Returns:
        ``{"ci": {"level", "n_boot", "seed", "unit", "n_slides", "n_cases", "metrics": {name: {"value",
        "low", "high", "n_valid"}}}, "calibration": {"ece", "brier", "nll", "n_bins", "reliability", ...},
        "confusion_matrix": {"labels", "counts"}}``, or ``{}`` for an empty split.
    """
    probs, targets = check_inputs(probs, targets, len(class_names))
    if len(targets) == 0:
        return {}
    groups = None if case_ids is None else [str(c) for c in case_ids]
    ci = {
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "method": "percentile",
        "unit": "case" if groups is not None else "slide",
        "n_slides": int(len(targets)),
        "n_cases": int(len(set(groups))) if groups is not None else int(len(targets)),
        "metrics": bootstrap_ci(probs, targets, groups, n_boot, seed, level),
    }
    calibration = calibration_summary(probs, targets, n_bins)
    if temperature is not None and float(temperature) != 1.0:
        scaled = calibration_summary(apply_temperature(probs, temperature), targets, n_bins)
        calibration["temperature"] = float(temperature)
        calibration["temperature_scaled"] = {k: scaled[k] for k in ("ece", "brier", "nll")}
    counts = confusion(targets, probs.argmax(axis=1), len(class_names))
    return json_safe(
        {
            "ci": ci,
            "calibration": calibration,
            "confusion_matrix": {"labels": list(class_names), "counts": counts.tolist()},
        }
    )


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: undefined numbers (e.g. an AUC without both classes) become null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value
