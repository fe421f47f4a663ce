"""What `acmil train` writes now, and `acmil report` / `acmil compare` on real runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from acmil.cli import main as acmil
from acmil.evaluation.io import load_predictions

pytestmark = pytest.mark.slow


def test_train_writes_cis_and_calibration_per_split(runs: dict[str, Path]) -> None:
    metrics = json.loads((runs["acmil"] / "metrics.json").read_text())
    for split in ("val", "test"):
        m = metrics[split]
        ci = m["ci"]
        assert ci["unit"] == "case" and ci["n_boot"] == 1000 and ci["n_cases"] < ci["n_slides"]
        for name in ("auc", "balanced_accuracy", "f1_macro", "accuracy"):
            assert ci["metrics"][name]["value"] == pytest.approx(m[name], abs=1e-5)  # torchmetrics agrees
            assert ci["metrics"][name]["low"] <= m[name] + 1e-6 <= ci["metrics"][name]["high"] + 2e-6
        assert 0 <= m["calibration"]["ece"] <= 1 and 0 <= m["calibration"]["brier"] <= 1
    pred = load_predictions(runs["acmil"], "test")
    assert metrics["test"]["auc"] == pytest.approx(roc_auc_score(pred.targets, pred.probs[:, 1]), abs=1e-4)
    assert pred.case_ids is not None and len(set(pred.case_ids)) < len(pred.case_ids)


def test_report_writes_html_and_figures(runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert acmil(["report", str(runs["acmil"]), "--n-boot", "200"]) == 0
    page = (runs["acmil"] / "report.html").read_text()
    for name in re.findall(r'src="([^"]+)"', page):
        assert (runs["acmil"] / name).stat().st_size > 1000, name
    for stem in ("test_roc", "test_pr", "test_confusion", "test_reliability", "val_roc"):
        assert (runs["acmil"] / "evaluation" / f"{stem}.png").is_file()
        assert (runs["acmil"] / "evaluation" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    assert "95 % CI" in page and "expected calibration error" in page
    assert not list(runs["acmil"].rglob("*.partial"))


def test_compare_two_runs(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    code = acmil(["compare", str(runs["acmil"]), str(runs["abmil"]), "--names", "ACMIL", "ABMIL", "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "DeLong" in table and "paired bootstrap" in table and "ACMIL - ABMIL" in table
    result = json.loads((out / "compare.json").read_text())
    a, b = load_predictions(runs["acmil"]), load_predictions(runs["abmil"])
    positive = a.class_names[1]  # binary tasks score the second class, as scikit-learn does
    assert result["delong"][positive]["auc_a"] == pytest.approx(roc_auc_score(a.targets, a.probs[:, 1]))
    assert result["delong"][positive]["auc_b"] == pytest.approx(roc_auc_score(b.targets, b.probs[:, 1]))
    assert result["resampling_unit"] == "case" and result["slides"]["shared"] == len(a.targets)
    assert {p.name for p in out.iterdir()} >= {"compare.json", "compare.png", "compare.svg", "compare_roc.png"}
    # A model compared with itself: no difference, p = 1.
    same = acmil(["compare", str(runs["acmil"]), str(runs["acmil"]), "--out", str(tmp_path / "same")])
    assert same == 0
    rows = json.loads((tmp_path / "same" / "compare.json").read_text())["rows"]
    assert all(r["difference"] == 0 and r["p_value"] == 1.0 for r in rows)


def test_compare_refuses_runs_on_different_slides(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv = tmp_path / "other.csv"
    csv.write_text(
        "slide_id,label,predicted,prob_normal,prob_tumour\nx1,normal,normal,0.9,0.1\nx2,tumour,tumour,0.2,0.8\n"
    )
    assert acmil(["compare", str(runs["acmil"]), str(csv), "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "share 0 slide(s)" in err and "Traceback" not in err


def test_report_and_compare_name_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert acmil(["report", str(tmp_path)]) == 1
    assert "neither predictions.csv" in capsys.readouterr().err


def test_cli_help_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, acmil.cli as c; c.main(['--help']); "
        "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "compare" in out and "report" in out and "calibrate" in out
    assert out.strip().endswith("[]")
    assert np.isfinite(0.0)


def test_compare_aligns_class_columns_by_name(tmp_path: Path) -> None:
    from acmil.evaluation.compare import align

    rows = [("s1", "x", 0.9), ("s2", "y", 0.3), ("s3", "x", 0.6), ("s4", "y", 0.2)]
    for name, cols in (("a.csv", ("x", "y")), ("b.csv", ("y", "x"))):
        lines = [f"slide_id,label,predicted,prob_{cols[0]},prob_{cols[1]}"]
        for sid, label, px in rows:
            p = {"x": px, "y": 1 - px}
            lines.append(f"{sid},{label},x,{p[cols[0]]},{p[cols[1]]}")
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    a, b, counts = align(load_predictions(tmp_path / "a.csv"), load_predictions(tmp_path / "b.csv"))
    assert b.class_names == ["x", "y"] and b.probs == pytest.approx(a.probs) and (b.targets == a.targets).all()
    assert counts == {"shared": 4, "only_a": 0, "only_b": 0}


def test_report_of_a_cv_directory(runs: dict[str, Path], tmp_path: Path) -> None:
    """A cv folder laid out as `acmil cv` writes it, its folds being the two real runs."""
    import csv

    cv = tmp_path / "cv"
    oof, folds = [], []
    for k, name in enumerate(("acmil", "abmil")):
        fold = cv / f"fold_{k}"
        fold.mkdir(parents=True)
        (fold / "config.yaml").write_text((runs[name] / "config.yaml").read_text())
        with (runs[name] / "predictions.csv").open() as fh:
            rows = [r for r in csv.DictReader(fh) if (r["split"] == "test") == (k == 0)]  # disjoint slides
        oof += [{"fold": k, **{c: v for c, v in r.items() if c != "split"}} for r in rows]
        folds.append({"fold": k, **json.loads((runs[name] / "metrics.json").read_text())})
    with (cv / "oof_predictions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(oof[0]))
        writer.writeheader()
        writer.writerows(oof)
    (cv / "cv_summary.json").write_text(json.dumps({"folds": folds, "metrics": {}, "n_folds": 2}))
    assert acmil(["report", str(cv), "--n-boot", "100"]) == 0
    page = (cv / "report.html").read_text()
    assert "pooled out-of-fold predictions" in page and "Folds" in page
    assert re.search(r"<td>0</td><td>\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]</td>", page)  # fold 0's AUC with its CI
    summary = json.loads((cv / "evaluation" / "evaluation.json").read_text())["out-of-fold"]
    assert summary["ci"]["n_slides"] == len(oof) and summary["ci"]["unit"] == "case"
