"""umap: instance embeddings of a trained model, sub-sampled with a fixed seed, three colourings."""

from __future__ import annotations

import csv
import json

import numpy as np

from acmil.analysis.umap_plot import main, subsample, within_slide_rank


def test_subsample_and_rank() -> None:
    rng = np.random.default_rng(0)
    idx = subsample(100, 10, rng)
    assert len(idx) == 10 and len(set(idx)) == 10 and np.all(np.diff(idx) > 0)
    assert subsample(5, 10, rng).tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(subsample(100, 10, np.random.default_rng(3)), subsample(100, 10, np.random.default_rng(3)))
    assert within_slide_rank(np.array([0.5, 0.1, 0.4])).tolist() == [1.0, 0.0, 0.5]


def test_umap_command(cohort, acmil_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "u"
    slides = ["slide_00", "slide_01", "slide_03"]
    assert (
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--slides",
                *slides,
                "--masks",
                str(cohort.masks),
                "--max-points-per-slide",
                "60",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "drew 180 of" in capsys.readouterr().out
    s = json.loads((out / "umap.json").read_text())
    assert s["n_points"] == 180 and list(s["slides"]) == slides
    assert all(d["n_drawn"] == 60 < d["n_tiles"] for d in s["slides"].values())
    assert s["coloured_by"] == ["attention_rank", "branch", "tumour"]
    rows = list(csv.DictReader((out / "umap.csv").open()))
    assert len(rows) == 180
    assert {int(r["branch"]) for r in rows} <= {0, 1, 2}
    # slide_00 is normal (no mask): all its tiles count as normal; tumour slides have some tumour tiles.
    assert all(r["tumour"] == "0" for r in rows if r["slide_id"] == "slide_00")
    assert any(r["tumour"] == "1" for r in rows if r["slide_id"] == "slide_01")
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    assert np.isfinite(xy).all() and xy.std(0).min() > 0
    # Tumour tiles share the planted direction: in the map they lie closer to each other than to the rest.
    tum = np.array([r["tumour"] == "1" for r in rows])
    centre = xy[tum].mean(0)
    assert np.linalg.norm(xy[tum] - centre, axis=1).mean() < np.linalg.norm(xy[~tum] - centre, axis=1).mean()
    assert (out / "umap.png").stat().st_size > 10000

    # Same seed, same points drawn.
    out2 = tmp_path / "u2"
    assert (
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--slides",
                *slides,
                "--max-points-per-slide",
                "60",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    rows2 = list(csv.DictReader((out2 / "umap.csv").open()))
    assert [(r["slide_id"], r["tile"]) for r in rows2] == [(r["slide_id"], r["tile"]) for r in rows]
    assert "tumour" not in rows2[0]
