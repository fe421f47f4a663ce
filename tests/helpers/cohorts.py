"""Tiny cohorts and the runs trained on them.

- For the training and evaluation tests, on the cohorts of acmil.synthetic.features: the fast trainer
  settings, the ``acmil train`` arguments, and one run in-process.
- For the analysis and docker tests: a cohort of feature files with tumour masks (``make_tumour_cohort``) and a
  plain-torch checkpoint trained on it (``train_on_cohort``): real models whose attention should find the tumour,
  real .h5 files, real masks.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from acmil.checkpoint import ModelCard, save_model
from acmil.features import write_features
from acmil.models import create_model
from tests.helpers.plain_training import fit_bags

if TYPE_CHECKING:
    from acmil.synthetic.features import SyntheticCohort

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
    """``run_train(args)`` from the repository (configs/ paths) on one torch thread; returns its metrics.

    For session fixtures, which cannot use the function-scoped chdir / one-thread fixtures of the tests."""
    from acmil.training.cli import run_train

    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(repo_root)
    torch.set_num_threads(1)
    try:
        return run_train(args).metrics
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


DIM = 32
GRID = 12  # tiles per side
PATCH = 256  # level-0 pixels per tile
MASK_DOWNSAMPLE = 32


@dataclass
class TumourCohort:
    features: Path
    masks: Path
    labels_csv: Path
    labels: dict[str, int]  # slide_id -> 0 normal / 1 tumour


def make_tumour_cohort(root: Path, n_slides: int = 16, seed: int = 0, dim: int = DIM, grid: int = GRID) -> TumourCohort:
    """Tumour slides carry a square of tumour tiles whose features are shifted along a fixed direction; the
    mask PNG (at a downsample of level 0) marks exactly that square.

    Write ``root/features/*.h5``, ``root/masks/*.png`` (tumour slides only) and ``root/labels.csv``."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    feats_dir, masks_dir = root / "features", root / "masks"
    feats_dir.mkdir(parents=True)
    masks_dir.mkdir()
    size0 = grid * PATCH
    ys, xs = np.mgrid[0:grid, 0:grid]
    labels: dict[str, int] = {}
    for i in range(n_slides):
        slide_id = f"slide_{i:02d}"
        tumour = i % 2 == 1
        keep = rng.random(grid * grid) > 0.1  # drop some tiles, as tissue detection would
        gx, gy = xs.ravel()[keep], ys.ravel()[keep]
        coords = np.stack([gx, gy], 1).astype(np.int64) * PATCH
        feats = rng.normal(size=(len(gx), dim)).astype(np.float32)
        if tumour:
            side = int(rng.integers(3, 5))
            x0, y0 = rng.integers(0, grid - side, size=2)
            inside = (gx >= x0) & (gx < x0 + side) & (gy >= y0) & (gy < y0 + side)
            feats[inside] += 2.5 * direction
            mask = np.zeros((size0 // MASK_DOWNSAMPLE, size0 // MASK_DOWNSAMPLE), dtype=np.uint8)
            s = PATCH // MASK_DOWNSAMPLE
            mask[y0 * s : (y0 + side) * s, x0 * s : (x0 + side) * s] = 255
            Image.fromarray(mask).save(masks_dir / f"{slide_id}.png")
        coord_attrs = {
            "patch_size": 224,
            "patch_size_level0": PATCH,
            "level0_width": size0,
            "level0_height": size0,
            "name": slide_id,
        }
        write_features(feats_dir / f"{slide_id}.h5", feats, coords, {"slide_id": slide_id}, coord_attrs)
        labels[slide_id] = int(tumour)
    labels_csv = root / "labels.csv"
    with labels_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "label"])
        w.writerows((s, "tumour" if y else "normal") for s, y in labels.items())
    return TumourCohort(feats_dir, masks_dir, labels_csv, labels)


def train_on_cohort(cohort: TumourCohort, arch: str, path: Path, epochs: int = 25, seed: int = 0, **arch_args) -> Path:
    """Plain-torch training (one bag per step) and :func:`save_model`; a few seconds on a CPU."""
    from acmil.features import read_features

    torch.manual_seed(seed)
    bags = [
        (torch.from_numpy(read_features(cohort.features / f"{s}.h5").features), y) for s, y in cohort.labels.items()
    ]
    model = create_model(arch, in_dim=DIM, n_classes=2, **arch_args)
    fit_bags(model, bags, epochs, lr=2e-3, weight_decay=1e-4, shuffle=True)
    card = ModelCard(arch=arch, arch_args=arch_args, in_dim=DIM, class_names=["normal", "tumour"])
    return save_model(path, model, card)


# The analysis and docker tests' ACMIL: three branches, small layers.
SMALL_ACMIL = dict(n_branches=3, top_k=5, mask_ratio=0.6, hidden_dim=16, attn_dim=16)
