"""A served model for the image's health-check test: the analysis tests' tumour cohort and ACMIL checkpoint."""

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
