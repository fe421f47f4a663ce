"""Fixtures of the training tests: generated cohorts of feature files and one shared trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmil.training.synthetic_features import SyntheticCohort, make_cohort

# Tiny model, strong planted signal: a few CPU seconds per run. lr is raised from the paper's 1e-4 because
# the toy cohort gives only a few hundred optimiser steps.
FAST = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--model.lr",
    "5e-3",
]


def train_args(cohort: SyntheticCohort, run: Path, epochs: int = 2, seed: int = 1, *extra: str) -> list[str]:
    return [
        "--config",
        "configs/acmil.yaml",
        "--data.features_dir",
        str(cohort.features_dir),
        "--data.labels_csv",
        str(cohort.labels_csv),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(run),
        "--seed_everything",
        str(seed),
        *FAST,
        *extra,
    ]


@pytest.fixture(name="train_args")
def _train_args_fixture():
    """The helper above, for tests (test modules cannot import conftest)."""
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
    import os
    import time

    import torch

    from acmil.training.cli import run_train

    run = tmp_path_factory.mktemp("run") / "acmil"
    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(repo_root)
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        metrics = run_train(train_args(cohort, run, 10)).metrics
        seconds = time.perf_counter() - start
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return {"run": run, "metrics": metrics, "seconds": seconds}
