"""A small generated cohort with a planted signal, and ACMIL / ABMIL checkpoints trained on it.

Tumour slides carry a square of tumour tiles whose features are shifted along a fixed direction; the
mask PNG (at a downsample of level 0) marks exactly that square. A short plain-torch training run then
gives checkpoints whose attention should find the tumour: real models, real .h5 files, real masks.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acmil.checkpoint import ModelCard, save_model
from acmil.features import write_features
from acmil.models import create_model
from tests.helpers.plain_training import fit_bags

DIM = 32
GRID = 12  # tiles per side
PATCH = 256  # level-0 pixels per tile
MASK_DOWNSAMPLE = 32


@dataclass
class Cohort:
    features: Path
    masks: Path
    labels_csv: Path
    labels: dict[str, int]  # slide_id -> 0 normal / 1 tumour


def make_cohort(root: Path, n_slides: int = 16, seed: int = 0, dim: int = DIM, grid: int = GRID) -> Cohort:
    """Write ``root/features/*.h5``, ``root/masks/*.png`` (tumour slides only) and ``root/labels.csv``."""
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
    return Cohort(feats_dir, masks_dir, labels_csv, labels)


def train_checkpoint(cohort: Cohort, arch: str, path: Path, epochs: int = 25, seed: int = 0, **arch_args) -> Path:
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


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    return make_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def acmil_ckpt(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint(
        cohort,
        "acmil",
        tmp_path_factory.mktemp("ckpt") / "acmil.ckpt",
        n_branches=3,
        top_k=5,
        mask_ratio=0.6,
        hidden_dim=16,
        attn_dim=16,
    )


@pytest.fixture(scope="session")
def abmil_ckpt(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_checkpoint(cohort, "abmil", tmp_path_factory.mktemp("ckpt") / "abmil.ckpt", hidden_dim=16, attn_dim=16)
