"""Train / val / test splits: stratified by label, grouped by case (slides of one case never straddle splits).

All functions are pure: they take label indices and group names and return index arrays; the seed is an
argument, so every process of a distributed run computes the same split.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold


def _fold_pairs(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise ValueError(f"cannot make {k} folds from {n_groups} cases (need at least one case per fold)")
    with warnings.catch_warnings():
        # "The least populated class has only n members": still a valid grouped split, just less balanced.
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(labels)), labels, groups)]


def kfold(labels: Sequence[int], groups: Sequence[str], k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified, case-grouped folds: a list of (train_idx, test_idx)."""
    if k < 2:
        raise ValueError(f"--folds must be >= 2, got {k}")
    return _fold_pairs(np.asarray(labels), np.asarray(groups), k, seed)


def hold_out(labels: Sequence[int], groups: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held_out) with about ``fraction`` held out, stratified and case-grouped."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    idx = np.arange(len(labels))
    if fraction <= 0 or len(idx) == 0:
        return idx, idx[:0]
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    k = max(2, int(round(1.0 / fraction)))
    if len(np.unique(groups)) >= k:
        kept, held = _fold_pairs(labels, groups, k, seed)[0]
        return np.sort(kept), np.sort(held)
    # Too few cases for stratified folds: fall back to a plain grouped random split.
    kept, held = next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(idx, groups=groups))
    return np.sort(kept), np.sort(held)


def make_splits(
    labels: Sequence[int],
    groups: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int | None = None,
    fold: int = 0,
) -> dict[str, list[int]]:
    """Indices of train / val / test.

    Without ``folds``: ``test_fraction`` of the cases go to test, then ``val_fraction`` (of the whole) to val.
    With ``folds``: fold ``fold`` of a K-fold split is the test set and ``val_fraction`` of the remaining
    cases form the inner validation split used for model selection.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    all_idx = np.arange(len(labels))
    if folds:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds}), got {fold}")
        rest, test = kfold(labels, groups, folds, seed)[fold]
        rel_val = val_fraction
    else:
        rest, test = hold_out(labels, groups, test_fraction, seed)
        rel_val = val_fraction / (1.0 - test_fraction) if test_fraction < 1 else 0.0
    rest = np.sort(rest)
    kept, val = hold_out(labels[rest], groups[rest], min(rel_val, 0.9), seed + 1)
    return {
        "train": sorted(int(i) for i in rest[kept]),
        "val": sorted(int(i) for i in rest[val]),
        "test": sorted(int(i) for i in all_idx[np.sort(test)]),
    }
