"""Fixtures of the training tests: generated cohorts of feature files and one shared trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmil.synthetic.features import SyntheticCohort, make_cohort
from tests.helpers.cohorts import train_args, train_in_repo


@pytest.fixture(name="train_args")
def _train_args_fixture():
    """tests.helpers.cohorts.train_args, as a fixture."""
    return train_args


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one torch thread is faster, and immune to other processes competing for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _repo_cwd(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/ paths in the tests are relative to the repository."""
    monkeypatch.chdir(repo_root)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCohort:
    """60 slides, 2 classes, 32-d features, 60-120 patches; 10% planted tumour patches in tumour slides."""
    return make_cohort(tmp_path_factory.mktemp("cohort"), n_slides=60, signal=3.0, seed=0)


@pytest.fixture(scope="session")
def trained_run(cohort: SyntheticCohort, tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict:
    """One full `acmil train` run (10 epochs) shared by the tests that inspect a run directory."""
    run = tmp_path_factory.mktemp("run") / "acmil"
    return {"run": run, "metrics": train_in_repo(train_args(cohort, run, 10), repo_root)}
