"""Two really trained runs (ACMIL and ABMIL, a few epochs) on one generated cohort with two slides per case."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmil.synthetic.features import SyntheticCohort, make_cohort
from tests.helpers.cohorts import train_args, train_in_repo


@pytest.fixture(scope="session")
def eval_cohort(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCohort:
    """60 slides of 30 cases, a weak signal so that the models make mistakes."""
    return make_cohort(tmp_path_factory.mktemp("eval_cohort"), n_slides=60, signal=1.2, slides_per_case=2, seed=3)


def train(cohort: SyntheticCohort, run: Path, config: str, repo_root: Path, epochs: int = 4) -> Path:
    train_in_repo(train_args(cohort, run, epochs, 0, "--trainer.logger", "false", config=config), repo_root)
    return run


@pytest.fixture(scope="session")
def runs(eval_cohort: SyntheticCohort, tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_runs")
    return {name: train(eval_cohort, root / name, f"configs/{name}.yaml", repo_root) for name in ("acmil", "abmil")}
