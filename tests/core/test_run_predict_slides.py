"""``run_predict`` on raw slides returns the rows of predictions.csv, the failures and every file written."""

from __future__ import annotations

import csv

from acmil.training.predict import PredictConfig, run_predict
from tests.helpers.slides import make_slide


def test_run_predict_on_slides_returns_rows_failures_and_paths(recipe_run, tmp_path) -> None:
    slides = tmp_path / "slides"
    make_slide(slides / "s1.tif", seed=31)
    (slides / "broken.svs").write_bytes(b"II*\x00 not a slide at all")
    out = tmp_path / "out"
    result = run_predict(PredictConfig(checkpoint=[str(recipe_run["checkpoint"])], slides=str(slides), out=str(out)))
    with (out / "predictions.csv").open(newline="") as fh:
        assert [dict(r) for r in result.rows] == list(csv.DictReader(fh))
    assert [r["slide_id"] for r in result.rows] == ["s1"] and set(result.failures) == {"broken"}
    assert result.paths == [out / "predictions.csv", out / "heatmaps" / "s1.png", out / "failures.csv"]
    assert all(p.stat().st_size > 0 for p in result.paths)
    assert result.seconds["s1"]["total"] > 0
