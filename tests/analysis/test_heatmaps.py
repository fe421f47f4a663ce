"""heatmap: PNGs per slide (mean and per branch) over a blank canvas, a generated TIFF and a real slide."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from acmil import heatmap as hm
from acmil.analysis.heatmaps import find_slide, main
from acmil.checkpoint import load_model
from acmil.features import read_features, write_features
from acmil.heatmap import render_heatmap
from acmil.inference import predict_bag


def test_blank_background_matches_the_shared_renderer(cohort, acmil_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "hm"
    assert (
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--out",
                str(out),
                "--slide-ids",
                "slide_01",
                "slide_02",
                "--max-size",
                "300",
            ]
        )
        == 0
    )
    assert "wrote 8 heatmaps for 2 slides (0 over a slide thumbnail)" in capsys.readouterr().out
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"slide_0{i}_{k}.png" for i in (1, 2) for k in ("branch0", "branch1", "branch2", "mean")]
    # The command's PNG is exactly what the service's renderer draws for the same attention.
    slide = read_features(cohort.features / "slide_01.h5")
    att = predict_bag(load_model(acmil_ckpt).model, slide.features).mean_attention
    expected = render_heatmap(
        slide.coords,
        att,
        256,
        (3072, 3072),
        max_size=300,
        alpha=0.5,  # the viewer's look:
        cmap=hm.DEFAULT_CMAP,
        smoothing_sigma=hm.DEFAULT_SMOOTHING,
        normalisation=hm.DEFAULT_NORMALISATION,
        transparent_below=hm.DEFAULT_TRANSPARENT_BELOW,
    )
    got = Image.open(out / "slide_01_mean.png")
    assert got.size == (300, 300)
    np.testing.assert_array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))
    summary = json.loads((out / "heatmaps.json").read_text())
    assert summary["slides"]["slide_01"]["background"] == "blank"
    assert summary["slides"]["slide_01"]["predicted"] in ("normal", "tumour")


def test_thumbnail_background_from_a_tiff(cohort, abmil_ckpt, tmp_path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    img = np.zeros((3072, 3072, 3), dtype=np.uint8)
    img[:, :1536] = (30, 160, 40)  # a green left half: the thumbnail must show through
    tifffile.imwrite(slides / "slide_04.tif", img, tile=(256, 256), photometric="rgb")
    assert find_slide(slides, "slide_04") == slides / "slide_04.tif"
    out = tmp_path / "hm"
    assert (
        main(
            [
                "--checkpoint",
                str(abmil_ckpt),
                "--features",
                str(cohort.features),
                "--slides",
                str(slides),
                "--slide-ids",
                "slide_04",
                "slide_05",
                "--out",
                str(out),
                "--max-size",
                "256",
            ]
        )
        == 0
    )
    summary = json.loads((out / "heatmaps.json").read_text())
    assert summary["slides"]["slide_04"]["background"].endswith("slide_04.tif")
    assert summary["slides"]["slide_05"]["background"] == "blank"  # no image for it: still rendered
    assert sorted(p.name for p in out.glob("*.png")) == ["slide_04_mean.png", "slide_05_mean.png"]  # ABMIL: 1 branch
    px = np.asarray(Image.open(out / "slide_04_mean.png").convert("RGB")).astype(int)
    blank = np.asarray(Image.open(out / "slide_05_mean.png").convert("RGB")).astype(int)
    # Where the slide has no tile, the pixel is the thumbnail's (green left / black right), not white.
    holes = _holes(cohort, "slide_04")
    assert holes, "the generated cohort drops some tiles"
    for cx, cy, gx in holes:
        expected = (30, 160, 40) if gx < 6 else (0, 0, 0)
        assert np.abs(px[cy, cx] - expected).max() <= 3
    for cx, cy, _ in _holes(cohort, "slide_05"):
        assert blank[cy, cx].tolist() == [255, 255, 255]


def _holes(cohort, slide_id: str) -> list[tuple[int, int, int]]:
    """Pixel (x, y) inside each grid cell without a tile, in a 256 px rendering of the 12 x 12 grid, and its column."""
    slide = read_features(cohort.features / f"{slide_id}.h5")
    tiles = {(int(x) // 256, int(y) // 256) for x, y in slide.coords}
    return [
        (gx * 256 // 12 + 10, gy * 256 // 12 + 10, gx) for gx in range(12) for gy in range(12) if (gx, gy) not in tiles
    ]


def test_real_slide_thumbnail(shared_slides, acmil_ckpt, tmp_path) -> None:
    import openslide

    with openslide.OpenSlide(str(shared_slides / "CMU-1-Small-Region.svs")) as s:
        w, h = s.dimensions
    xs, ys = np.meshgrid(np.arange(0, w - 256, 256), np.arange(0, h - 256, 256))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    feats = np.random.default_rng(0).normal(size=(len(coords), 32)).astype(np.float32)
    fdir = tmp_path / "features"
    fdir.mkdir()
    write_features(
        fdir / "CMU-1-Small-Region.h5",
        feats,
        coords,
        {},
        {"patch_size_level0": 256, "level0_width": w, "level0_height": h},
    )
    out = tmp_path / "hm"
    assert (
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(fdir),
                "--slides",
                str(shared_slides),
                "--out",
                str(out),
                "--max-size",
                "400",
                "--no-branches",
            ]
        )
        == 0
    )
    img = Image.open(out / "CMU-1-Small-Region_mean.png")
    assert max(img.size) == 400 and abs(img.size[0] / img.size[1] - w / h) < 0.01
    summary = json.loads((out / "heatmaps.json").read_text())
    assert summary["slides"]["CMU-1-Small-Region"]["background"].endswith("CMU-1-Small-Region.svs")


def test_unreadable_slide_falls_back_and_bad_features_are_reported(cohort, acmil_ckpt, tmp_path) -> None:
    slides, feats = tmp_path / "slides", tmp_path / "features"
    slides.mkdir()
    feats.mkdir()
    (slides / "slide_01.tif").write_bytes(b"not a tiff")
    (feats / "slide_01.h5").symlink_to(cohort.features / "slide_01.h5")
    (feats / "empty.h5").write_bytes(b"")
    out = tmp_path / "hm"
    assert (
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(feats),
                "--slides",
                str(slides),
                "--out",
                str(out),
                "--no-branches",
            ]
        )
        == 0
    )
    summary = json.loads((out / "heatmaps.json").read_text())
    assert summary["slides"]["slide_01"]["background"].startswith("blank (slide_01.tif unreadable")
    assert "empty" in summary["errors"]
    assert not list(out.glob(".*partial"))


def test_missing_slides_folder(cohort, acmil_ckpt, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="slides folder"):
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--slides",
                str(tmp_path / "no"),
                "--out",
                str(tmp_path),
            ]
        )


def test_features_of_another_width_are_named_with_the_shared_check(cohort, acmil_ckpt, tmp_path, capsys) -> None:
    from acmil.features import write_features

    feats = tmp_path / "features"
    feats.mkdir()
    (feats / "slide_01.h5").symlink_to(cohort.features / "slide_01.h5")
    wide = feats / "wide.h5"
    coords = np.arange(8, dtype=np.int64).reshape(4, 2) * 256
    write_features(wide, np.zeros((4, 64), np.float32), coords, coord_attrs={"patch_size_level0": 256})
    out = tmp_path / "hm"
    assert main(["--checkpoint", str(acmil_ckpt), "--features", str(feats), "--out", str(out), "--no-branches"]) == 0
    error = json.loads((out / "heatmaps.json").read_text())["errors"]["wide"]
    assert str(wide) in error and "64-d features, the model expects 32-d" in error and "mat1" not in error
    assert "skipped wide" in capsys.readouterr().out
