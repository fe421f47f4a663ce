"""Slides for the tests: where the real ones are, generated pyramidal ones, and fast preprocessing settings.

Also the fixtures of a slide preprocessed by ``acmil preprocess`` (``recipe_run``) and of a new slide
(``fresh_slide``), registered by tests/conftest.py for the core, preprocessing and job tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# ACMIL_TEST_SLIDES overrides where the real slides are; CI points it at an empty folder for a second pass, so
# a test that passes only with ../shared beside the checkout (as a fresh clone lacks it) fails there.
SHARED_SLIDES = Path(os.environ.get("ACMIL_TEST_SLIDES") or REPO_ROOT.parent / "shared" / "data" / "slides")

# resnet18 with seeded random weights on 64 px tiles at 2 µm/px, fed as they are: fast and deterministic.
FAST_PREPROCESS = [
    "--encoder",
    "resnet18",
    "--weights",
    "random",
    "--resize",
    "none",
    "--tile-size",
    "64",
    "--target-mpp",
    "2.0",
    "--batch-size",
    "16",
    "--no-progress",
]
# The same with one slide worker: the ``recipe_run`` fixture's and the recipe tests' settings.
FAST = [*FAST_PREPROCESS, "--workers", "1"]
CLASSES = ["normal", "tumour"]


def make_slide(path: Path, seed: int = 1, width: int = 1536, height: int = 1024, tumour: bool = True) -> Path:
    """A tiled pyramidal TIFF with a resolution tag (0.5 µm/px) that OpenSlide opens."""
    from acmil.preprocessing.synthetic import generate_slide

    path.parent.mkdir(parents=True, exist_ok=True)
    generate_slide(path, path.with_suffix(".mask.png"), tumour, seed, width, height, 0.5)
    path.with_suffix(".mask.png").unlink()
    return path


def make_checkpoint(path: Path, recipe: dict, seed: int = 0) -> Path:
    """An untrained ACMIL whose card carries ``recipe`` (predictions need not be good, only computed)."""
    import torch

    from acmil.checkpoint import ModelCard, save_model
    from acmil.models import ACMIL

    torch.manual_seed(seed)
    dim = int(recipe["feature_dim"])
    model = ACMIL(dim, len(CLASSES), n_branches=2, top_k=4, mask_ratio=0.5)
    card = ModelCard(
        arch="acmil",
        arch_args={"n_branches": 2, "top_k": 4, "mask_ratio": 0.5},
        in_dim=dim,
        class_names=list(CLASSES),
        encoder=recipe,
    )
    return save_model(path, model.eval(), card)


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory) -> dict:
    """One slide preprocessed by ``acmil preprocess`` (the recipe's source) and a checkpoint carrying it."""
    from acmil.preprocessing.cli import main as preprocess_main
    from acmil.recipe import recipe_from_file

    root = tmp_path_factory.mktemp("recipe")
    slides = root / "slides"
    make_slide(slides / "train_a.tif", seed=3)
    assert preprocess_main(["--slides", str(slides), "--out", str(root / "prep"), *FAST, "--no-qc"]) == 0
    h5 = root / "prep" / "features" / "train_a.h5"
    recipe = recipe_from_file(h5)
    ckpt = make_checkpoint(root / "model.ckpt", recipe)
    return {"root": root, "h5": h5, "recipe": recipe, "checkpoint": ckpt, "slide": slides / "train_a.tif"}


@pytest.fixture
def fresh_slide(tmp_path) -> Path:
    return make_slide(tmp_path / "in" / "new_slide.tif", seed=11)
