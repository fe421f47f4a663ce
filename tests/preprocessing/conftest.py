"""Fixtures of the preprocessing tests: small synthetic slides and fast encoder settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from acmil.synthetic.slides import generate_cohort
from tests.helpers.slides import FAST_PREPROCESS


@pytest.fixture(scope="session")
def fast_args() -> list[str]:
    return list(FAST_PREPROCESS)


@pytest.fixture(scope="session")
def syn_cohort(tmp_path_factory) -> Path:
    """Four 1536 x 1024 synthetic slides at 0.5 µm/px (levels 1 and 4), masks and labels."""
    out = tmp_path_factory.mktemp("syn_cohort")
    generate_cohort(out, 4, seed=7, width=1536, height=1024, mpp=0.5, workers=1)
    return out


def _write_plain_tiff(path: Path, rgb: np.ndarray, mpp: float = 0.5) -> Path:
    res = 1e4 / mpp
    tifffile.imwrite(
        path,
        rgb,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )
    return path


@pytest.fixture(scope="session")
def write_tiff():
    """write_tiff(path, rgb (h, w, 3) uint8, mpp=0.5): a tiled one-level TIFF OpenSlide opens as generic-tiff."""
    return _write_plain_tiff
