"""Splits: stratified, grouped by case, reproducible from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from acmil.training.splits import hold_out, kfold, make_splits


def _cohort(n_cases: int = 30, slides_per_case: int = 2):
    rng = np.random.default_rng(0)
    case_labels = rng.permutation(np.arange(n_cases) % 2)
    labels = np.repeat(case_labels, slides_per_case)
    groups = np.repeat([f"c{i}" for i in range(n_cases)], slides_per_case)
    return labels, groups


def test_splits_partition_group_and_stratify() -> None:
    labels, groups = _cohort()
    s = make_splits(labels, groups, val_fraction=0.2, test_fraction=0.2, seed=3)
    all_idx = sorted(s["train"] + s["val"] + s["test"])
    assert all_idx == list(range(len(labels)))  # a partition
    case_sets = {k: set(groups[v]) for k, v in s.items()}
    assert not (
        case_sets["train"] & case_sets["val"]
        or case_sets["train"] & case_sets["test"]
        or case_sets["val"] & case_sets["test"]
    )  # no case straddles splits
    for name in ("val", "test"):
        assert 0.1 <= len(s[name]) / len(labels) <= 0.3
        assert set(labels[s[name]]) == {0, 1}  # both classes present (stratified)


def test_splits_follow_the_seed() -> None:
    labels, groups = _cohort()
    assert make_splits(labels, groups, 0.2, 0.2, seed=1) == make_splits(labels, groups, 0.2, 0.2, seed=1)
    assert make_splits(labels, groups, 0.2, 0.2, seed=1) != make_splits(labels, groups, 0.2, 0.2, seed=2)


def test_kfold_covers_each_slide_once_as_test() -> None:
    labels, groups = _cohort()
    folds = kfold(labels, groups, 5, seed=0)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested) == list(range(len(labels)))
    for k in range(5):
        s = make_splits(labels, groups, 0.2, 0.0, seed=0, folds=5, fold=k)
        assert sorted(s["test"]) == sorted(folds[k][1].tolist())
        assert s["val"] and not set(s["val"]) & set(s["test"])


def test_too_few_cases_is_a_clear_error() -> None:
    labels, groups = _cohort(n_cases=3)
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 cases"):
        kfold(labels, groups, 5, seed=0)
    kept, held = hold_out(labels, groups, 0.5, seed=0)  # small cohorts fall back to a grouped random split
    assert len(kept) and len(held)
