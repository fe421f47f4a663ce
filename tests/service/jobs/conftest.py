"""Fixtures of the job tests (recipe_run and fresh_slide, shared with the core tests: tests/helpers/slides.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if path is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path
