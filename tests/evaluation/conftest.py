"""Two really trained runs (ACMIL and ABMIL, a few epochs) on one generated cohort with two slides per case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acmil.training.synthetic_features import SyntheticCohort, make_cohort

FAST = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--model.lr",
    "5e-3",
    "--trainer.logger",
    "false",
]


@pytest.fixture(scope="session")
def eval_cohort(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCohort:
    """60 slides of 30 cases, a weak signal so that the models make mistakes."""
    return make_cohort(tmp_path_factory.mktemp("eval_cohort"), n_slides=60, signal=1.2, slides_per_case=2, seed=3)


def train(cohort: SyntheticCohort, run: Path, config: str, repo_root: Path, epochs: int = 4) -> Path:
    import torch

    from acmil.training.cli import run_train

    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(repo_root)
    torch.set_num_threads(1)
    try:
        run_train(
            [
                "--config",
                config,
                "--data.features_dir",
                str(cohort.features_dir),
                "--data.labels_csv",
                str(cohort.labels_csv),
                "--trainer.max_epochs",
                str(epochs),
                "--trainer.default_root_dir",
                str(run),
                "--seed_everything",
                "0",
                *FAST,
            ]
        )
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="session")
def runs(eval_cohort: SyntheticCohort, tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_runs")
    return {name: train(eval_cohort, root / name, f"configs/{name}.yaml", repo_root) for name in ("acmil", "abmil")}
