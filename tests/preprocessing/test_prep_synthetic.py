"""Synthetic slides: OpenSlide reads them with the stated MPP and pyramid; masks match the planted tumour."""

from __future__ import annotations

import csv

import numpy as np
import openslide
import pytest

from acmil.synthetic.slides import generate_cohort, main, read_mask, tumour_fraction


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    slides = generate_cohort(out, 4, seed=3, width=2048, height=1536, mpp=0.25, workers=1)
    return out, slides


def test_layout_labels_and_openslide_metadata(cohort):
    out, slides = cohort
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert [r["slide_id"] for r in rows] == [s.slide_id for s in slides]
    assert sorted(r["label"] for r in rows) == ["normal", "normal", "tumour", "tumour"]
    for s in slides:
        assert (out / "slides" / f"{s.slide_id}.tif").is_file() and (out / "masks" / f"{s.slide_id}.png").is_file()
        with openslide.OpenSlide(s.path) as osr:
            assert osr.dimensions == (2048, 1536)
            assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
            assert osr.level_count >= 1
    assert not list(out.rglob("*.partial"))


def test_masks_and_tumour_fraction(cohort):
    out, slides = cohort
    for s in slides:
        mask, down = read_mask(s.mask_path)
        assert mask.shape == (1536 // down, 2048 // down)
        assert (mask.any()) == (s.label == "tumour")
    tum = next(s for s in slides if s.label == "tumour")
    mask, down = read_mask(tum.mask_path)
    ys, xs = np.nonzero(mask)
    inside = np.array([[xs[0] * down, ys[0] * down]])
    coords = np.concatenate([inside, [[0, 0]], [[-5000, -5000]]])
    frac = tumour_fraction(tum.mask_path, coords, down)  # one-mask-pixel tiles: exact 1 / 0
    assert frac.tolist() == [1.0, float(mask[0, 0]), 0.0]
    # tiles covering the whole slide: area-weighted mean equals the mask mean
    grid = np.array([[x, y] for y in range(0, 1536, 256) for x in range(0, 2048, 256)])
    assert tumour_fraction(mask, grid, 256, down).mean() == pytest.approx(mask.mean())


def test_tumour_tiles_look_different(cohort):
    out, slides = cohort
    tum = next(s for s in slides if s.label == "tumour")
    mask, down = read_mask(tum.mask_path)
    grid = np.array([[x, y] for y in range(0, 1536, 64) for x in range(0, 2048, 64)])
    frac = tumour_fraction(mask, grid, 64, down)
    assert (frac == 1).any()
    with openslide.OpenSlide(tum.path) as osr:

        def mean_rgb(xy):
            return np.asarray(osr.read_region(tuple(int(v) for v in xy), 0, (64, 64)).convert("RGB")).mean((0, 1))

        tumour_px = np.mean([mean_rgb(c) for c in grid[frac == 1][:5]], 0)
        normal_px = np.mean([mean_rgb(c) for c in grid[frac == 0][:5]], 0)
    assert tumour_px[0] < 170 < normal_px[0]  # dark violet vs white background / pink stroma


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--n-slides", "2", "--width", "512", "--height", "512", "--workers", "1"]) == 0
    assert len(list((tmp_path / "slides").glob("*.tif"))) == 2
    assert "2 slides" in capsys.readouterr().out
