"""The demo's ACMIL-against-ABMIL comparison (``acmil.demo.compare_runs``) and its report section, on two
small run directories (the full demo is tests/core/test_demo.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from acmil.analysis.report import build_blocks, to_html, to_markdown
from acmil.demo import compare_runs
from acmil.evaluation.compare import compare
from acmil.evaluation.io import load_predictions


def _run(path: Path, probs: np.ndarray, labels: list[str], splits: list[str]) -> Path:
    path.mkdir(parents=True)
    with (path / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "split", "label", "predicted", "prob_normal", "prob_tumour"])
        for i, (p, lab, split) in enumerate(zip(probs, labels, splits, strict=True)):
            w.writerow([f"s{i:02d}", split, lab, "tumour" if p > 0.5 else "normal", f"{1 - p:.6f}", f"{p:.6f}"])
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    labels = ["tumour" if i % 2 else "normal" for i in range(16)]
    y = np.array([lab == "tumour" for lab in labels], dtype=float)
    splits = ["val" if i < 6 else "test" for i in range(16)]
    a = _run(tmp_path / "acmil", np.clip(0.7 * y + 0.3 * rng.random(16), 0, 1), labels, splits)
    b = _run(tmp_path / "abmil", np.clip(0.3 * y + 0.7 * rng.random(16), 0, 1), labels, splits)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("slide_id,label\n" + "".join(f"s{i:02d},{lab}\n" for i, lab in enumerate(labels)))
    return a, b, labels_csv


def test_compare_runs_pools_held_out_slides_and_writes_figures(two_runs, tmp_path: Path) -> None:
    a, b, labels_csv = two_runs
    out = tmp_path / "analysis" / "compare"
    got = compare_runs(a, b, labels_csv, out, seed=3)
    # The same numbers as the compare function on all 16 held-out (val + test) slides.
    ref = compare(load_predictions(a, "all"), load_predictions(b, "all"), ("ACMIL", "ABMIL"), seed=3)
    assert got["slides"]["shared"] == 16 and got["rows"] == ref["rows"]
    assert got["rows"][0]["test"] == "DeLong" and got["names"] == ["ACMIL", "ABMIL"]
    assert "ACMIL - ABMIL" in got["table"]
    assert json.loads((out / "compare.json").read_text())["rows"] == ref["rows"]
    for name in ("compare.png", "compare_roc.png"):
        assert (out / name).stat().st_size > 1000

    # The report: the table with every row, and both figures, linked relative to the demo folder.
    summary = {"compare": got}
    blocks = [b for b in _report_blocks(tmp_path, summary) if b[0] != "h1"]
    md, page = to_markdown(blocks), to_html(blocks)
    assert "ACMIL against ABMIL on the same slides" in md and "paired DeLong" in md
    assert md.count("| AUROC | DeLong |") == 1 and md.count("paired bootstrap |") == len(got["rows"]) - 1
    for name in ("compare.png", "compare_roc.png"):
        assert f"(analysis/compare/{name})" in md and (tmp_path / "analysis" / "compare" / name).is_file()
    assert page.count('<figure class="wide"><a href="analysis/compare/') == 2  # shown large, as the other figures


def test_runs_that_cannot_be_compared_give_a_reason_not_a_failure(two_runs, tmp_path: Path) -> None:
    a, _, labels_csv = two_runs
    other = _run(tmp_path / "other", np.array([0.2, 0.8]), ["normal", "tumour"], ["test", "test"])
    (other / "predictions.csv").write_text((other / "predictions.csv").read_text().replace("s0", "x0"))
    got = compare_runs(a, other, labels_csv, tmp_path / "cmp")
    assert "share 0 slide" in got["error"]
    md = to_markdown(_report_blocks(tmp_path, {"compare": got}))
    assert "could not be compared" in md and "share 0 slide" in md


def _report_blocks(out: Path, extra: dict) -> list:
    """The demo report's blocks for a minimal summary plus ``extra``."""
    summary = {
        "size": {"n_slides": 2, "width": 1, "height": 1},
        "n_tiles": 1,
        "seed": 0,
        "encoder": "e",
        "encoder_weights_note": "n",
        "splits": {"train": [], "val": [], "test": []},
        "metrics": {},
        "localisation": {"acmil": {"mean_auc": None, "pooled_auc": None, "min_auc": None, "n_slides": 0}},
        "attention_stats": {},
        "heatmap_slides": [],
        "umap": {"n_points": 0, "n_tiles_total": 0},
        "serve_command": "acmil serve",
        "stage_seconds": {},
        **extra,
    }
    return build_blocks(out, summary)
