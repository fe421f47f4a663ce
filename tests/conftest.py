"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# recipe_run and fresh_slide: fixtures of a preprocessed slide and of a new one, for the core and job tests.
from tests.helpers.slides import REPO_ROOT, SHARED_SLIDES, fresh_slide, recipe_run  # noqa: F401

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
