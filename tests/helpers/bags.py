"""Builders of the service tests: a really trained ACMIL checkpoint and feature files.

The checkpoint is trained (plain torch, a few hundred steps) on generated bags where the class
"tumour" plants a few tiles along a fixed direction, so predictions and attention mean something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from acmil.checkpoint import ModelCard, save_model
from acmil.features import write_features
from acmil.models import ACMIL
from tests.helpers.plain_training import fit_bags

DIM = 32
PATCH = 224
CLASSES = ["normal", "tumour"]
CMU = "CMU-1-Small-Region"
LIVE_KEY = "live-test-key"  # the API key of the live_server fixture


def make_bag(rng: np.random.Generator, positive: bool, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, DIM), planted rows) for one bag; positives get 3..8 tiles shifted along axis 0."""
    feats = rng.normal(0.0, 1.0, (n, DIM)).astype(np.float32)
    planted = np.zeros(0, dtype=np.int64)
    if positive:
        planted = rng.choice(n, size=int(rng.integers(3, 9)), replace=False)
        feats[planted, :4] += 4.0
    return feats, planted


def grid_coords(n: int, cols: int, patch: int = PATCH) -> np.ndarray:
    idx = np.arange(n)
    return np.stack([idx % cols, idx // cols], axis=1).astype(np.int64) * patch


def train_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ACMIL(DIM, len(CLASSES), n_branches=3, top_k=4, mask_ratio=0.5)
    bags = [make_bag(rng, i % 2 == 1, int(rng.integers(40, 120))) for i in range(40)]
    fit_bags(model, [(torch.from_numpy(feats), i % 2) for i, (feats, _) in enumerate(bags)], epochs=6, lr=2e-3)
    card = ModelCard(
        arch="acmil",
        arch_args={"n_branches": 3, "top_k": 4, "mask_ratio": 0.5},
        in_dim=DIM,
        class_names=CLASSES,
        encoder={"encoder": "synthetic", "mpp_target": 0.5, "patch_size": PATCH},
        extra={
            "training_cohort": {
                "n_slides": 40,
                "classes": {"normal": 20, "tumour": 20},
                "encoder": "synthetic",
                "description": "synthetic feature bags of the service tests",
            }
        },
    )
    return save_model(path, model.eval(), card)


def write_slide(path: Path, feats: np.ndarray, coords: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    coord_attrs = {"patch_size_level0": PATCH, "patch_size": PATCH, "name": path.stem}
    if size is not None:
        coord_attrs.update(level0_width=size[0], level0_height=size[1])
    attrs = {"slide_id": path.stem, "mpp_level0": 0.5}
    return write_features(path, feats, coords, attrs=attrs, coord_attrs=coord_attrs)


def cmu_tissue_coords(slide_path: Path) -> np.ndarray:
    """Level-0 corners of the 224-px grid tiles of CMU-1-Small-Region that hold tissue (from a thumbnail)."""
    import openslide

    with openslide.OpenSlide(slide_path) as slide:
        w, h = slide.dimensions
        thumb = np.asarray(slide.get_thumbnail((w // 8, h // 8)).convert("L"), dtype=np.float32)
    coords = []
    for y in range(0, h - PATCH + 1, PATCH):
        for x in range(0, w - PATCH + 1, PATCH):
            cell = thumb[y // 8 : (y + PATCH) // 8, x // 8 : (x + PATCH) // 8]
            if (cell < 210).mean() > 0.25:
                coords.append((x, y))
    return np.asarray(coords, dtype=np.int64)
