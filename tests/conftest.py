"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, SHARED_SLIDES
from tests.helpers.slides import FAST, make_checkpoint, make_slide

# Model hubs are unreachable here and in CI: fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# Fixtures whose result depends on whether the shared slides are present (they take another path without).
SHARED_FIXTURES = ("shared_slides", "service_data")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_data: uses the shared slides when present (marked automatically)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that depends on the shared slides, so CI's slides-hidden pass can select them all."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SHARED_FIXTURES):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """The folder of real test slides next to the checkout (read-only); skips when it is absent."""
    if not (SHARED_SLIDES / "CMU-1-Small-Region.svs").is_file():
        pytest.skip(f"real test slides not found at {SHARED_SLIDES} (ACMIL_TEST_SLIDES)")
    return SHARED_SLIDES


@pytest.fixture(scope="session")
def recipe_run(tmp_path_factory) -> dict:
    """One slide preprocessed by ``acmil preprocess`` (the recipe's source) and a checkpoint carrying it.

    For the core tests (recipe, predict --slides) and the job tests."""
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
