"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Model hubs are unreachable here and in CI: fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SLIDES = REPO_ROOT.parent / "shared" / "data" / "slides"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """The folder of real test slides next to the checkout (read-only); skips when it is absent."""
    if not (SHARED_SLIDES / "CMU-1-Small-Region.svs").is_file():
        pytest.skip(f"real test slides not found at {SHARED_SLIDES}")
    return SHARED_SLIDES
