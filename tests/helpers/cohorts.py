"""Training runs on the generated feature cohorts of acmil.training.synthetic_features, for the training and
evaluation tests: the fast trainer settings, the ``acmil train`` arguments, and one run in-process."""

from __future__ import annotations

import os
from pathlib import Path

from acmil.training.synthetic_features import SyntheticCohort

# Tiny model, strong planted signal: a few CPU seconds per run. lr is raised from the paper's 1e-4 because
# the toy cohort gives only a few hundred optimiser steps.
FAST_TRAIN = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--model.lr",
    "5e-3",
]


def train_args(
    cohort: SyntheticCohort, run: Path, epochs: int = 2, seed: int = 1, *extra: str, config: str = "configs/acmil.yaml"
) -> list[str]:
    """``acmil train`` arguments: ``config`` (relative to the repository) on ``cohort`` into ``run``."""
    return [
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
        str(seed),
        *FAST_TRAIN,
        *extra,
    ]


def train_in_repo(args: list[str], repo_root: Path) -> dict:
    """``run_training(args)`` from the repository (configs/ paths) on one torch thread; returns its metrics.

    For session fixtures, which cannot use the function-scoped chdir / one-thread fixtures of the tests."""
    import torch

    from acmil.training.cli import run_training

    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(repo_root)
    torch.set_num_threads(1)
    try:
        return run_training(args)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
