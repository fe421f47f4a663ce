"""A small generated cohort with a planted signal, and ACMIL / ABMIL checkpoints trained on it
(tests.helpers.cohorts.make_tumour_cohort and train_on_cohort)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cohorts import SMALL_ACMIL, TumourCohort, make_tumour_cohort, train_on_cohort


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> TumourCohort:
    return make_tumour_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def acmil_ckpt(cohort: TumourCohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_on_cohort(cohort, "acmil", tmp_path_factory.mktemp("ckpt") / "acmil.ckpt", **SMALL_ACMIL)


@pytest.fixture(scope="session")
def abmil_ckpt(cohort: TumourCohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_on_cohort(cohort, "abmil", tmp_path_factory.mktemp("ckpt") / "abmil.ckpt", hidden_dim=16, attn_dim=16)
