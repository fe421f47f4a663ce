"""Helpers shared by the test areas, imported as ``tests.helpers.<module>`` (test modules cannot import conftest).

Where the repository and the real test slides are, for the helpers and conftests alike.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# ACMIL_TEST_SLIDES overrides where the real slides are; CI points it at an empty folder for a second pass, so
# a test that passes only with ../shared beside the checkout (as a fresh clone lacks it) fails there.
SHARED_SLIDES = Path(os.environ.get("ACMIL_TEST_SLIDES") or REPO_ROOT.parent / "shared" / "data" / "slides")
