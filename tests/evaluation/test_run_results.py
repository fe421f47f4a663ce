"""``run_compare`` / ``run_report`` / ``run_calibrate`` return what they computed: the same numbers as the files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from acmil.evaluation.compare import CompareConfig, run_compare
from acmil.evaluation.report import ReportConfig, run_report
from acmil.evaluation.temperature import CalibrateConfig, run_calibrate

pytestmark = pytest.mark.slow


def test_run_compare_returns_the_delong_p_value_of_compare_json(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = run_compare(CompareConfig(run_a=str(runs["acmil"]), run_b=str(runs["abmil"]), n_boot=100, out=str(out)))
    written = json.loads((out / "compare.json").read_text())
    positive = written["class_names"][1]
    assert result.comparison["delong"][positive]["p_value"] == written["delong"][positive]["p_value"]
    assert 0 <= result.comparison["delong"][positive]["p_value"] <= 1
    assert result.comparison["names"] == ["acmil", "abmil"]  # the folder names by default
    assert result.paths[0] == out / "compare.json" and all(p.is_file() for p in result.paths)
    assert "DeLong" in result.table and "acmil - abmil" in result.table


def test_run_report_returns_the_summaries_of_evaluation_json(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["acmil"], run)
    result = run_report(ReportConfig(run=str(run), n_boot=50, out=str(tmp_path / "page.html")))
    assert result.html == tmp_path / "page.html" and result.html.read_text().startswith("<!doctype html>")
    written = json.loads(result.evaluation_json.read_text())
    assert set(result.summaries) == set(written) >= {"val", "test"}
    assert result.summaries["test"]["ci"]["metrics"]["auc"]["value"] == pytest.approx(
        written["test"]["ci"]["metrics"]["auc"]["value"]
    )
    assert all(p.is_file() for p in result.paths) and (run / "evaluation" / "test_roc.svg") in result.paths


def test_run_calibrate_returns_the_record_of_calibration_json(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["acmil"], run)
    out = tmp_path / "calibrated.ckpt"
    result = run_calibrate(CalibrateConfig(run=str(run), out=str(out)))
    record = result.records[str(run)]
    assert record == json.loads((run / "calibration.json").read_text())
    assert record["temperature"] > 0 and record["split"] == "val"
    assert result.paths == [out, run / "calibration.json"] and out.is_file()
