"""``acmil predict --slides``: raw slides -> cached features -> predictions.csv and heatmaps; bad slides alone."""

from __future__ import annotations

import csv

from acmil.cli import main
from tests.helpers.slides import make_slide


def test_predict_slides_end_to_end_cached_rerun(recipe_run, tmp_path, capsys):
    slides = tmp_path / "slides"
    make_slide(slides / "s1.tif", seed=21)
    make_slide(slides / "s2.tif", seed=22, tumour=False)
    (slides / "broken.svs").write_bytes(b"II*\x00 not a slide at all")
    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", str(recipe_run["checkpoint"]), "--slides", str(slides), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1  # one slide failed, the others are predicted
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert sorted(r["slide_id"] for r in rows) == ["s1", "s2"]
    assert all(abs(float(r["prob_normal"]) + float(r["prob_tumour"]) - 1) < 1e-5 for r in rows)
    assert (out / "heatmaps" / "s1.png").stat().st_size > 0
    assert "broken" in (out / "failures.csv").read_text()
    assert "s1: encoding" in err and "tiles" in err and "s2: done" in err and "broken: FAILED" in err
    cached = list((out / "cache").glob("*/*/features/s1.h5"))
    assert len(cached) == 1 and cached[0].parts[-4] == recipe_run["recipe"]["recipe_hash"]
    # a rerun reads the cache: no encoding at all (how much faster: benchmarks/bench_jobs.py, predict_slides)
    main(["predict", "--checkpoint", str(recipe_run["checkpoint"]), "--slides", str(slides), "--out", str(out)])
    err = capsys.readouterr().err
    assert "encoding" not in err
    assert [r["prob_tumour"] for r in csv.DictReader((out / "predictions.csv").open())] == [
        r["prob_tumour"] for r in rows
    ]
