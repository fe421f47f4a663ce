"""Fixtures of the new-slide tests: generated pyramidal slides, a recipe made by real preprocessing, a model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jobs_helpers import FAST, make_checkpoint, make_slide  # noqa: F401 - re-exported for fixtures


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


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if path is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path
