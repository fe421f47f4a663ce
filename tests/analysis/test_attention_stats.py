"""attention-stats: the top-K arithmetic on known distributions, and the command on trained checkpoints."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from acmil.analysis.attention_stats import cumulative_curve, main, topk_cumulative, topk_keys
from acmil.cli import main as acmil_main


def test_topk_on_known_distributions() -> None:
    uniform = np.full(200, 1 / 200)
    got = topk_cumulative(uniform)
    assert got["top1"] == pytest.approx(0.005)
    assert got["top100"] == pytest.approx(0.5)
    assert got["top1pct"] == pytest.approx(0.01)  # 2 tiles
    assert got["top10pct"] == pytest.approx(0.1)  # 20 tiles
    peaked = np.zeros(30)
    peaked[[3, 7]] = [0.7, 0.3]
    got = topk_cumulative(peaked)
    assert got["top1"] == pytest.approx(0.7)
    assert got["top5"] == got["top100"] == pytest.approx(1.0)  # K > N counts every tile
    assert got["top1pct"] == pytest.approx(0.7)  # 1 % of 30 rounds up to one tile
    assert list(got) == topk_keys()


def test_cumulative_curve_is_monotone_and_ends_at_one() -> None:
    att = np.random.default_rng(0).dirichlet(np.ones(500) * 0.1)
    curve = cumulative_curve(att)
    assert np.all(np.diff(curve) >= -1e-12)
    assert curve[-1] == pytest.approx(1.0)
    assert curve[0] <= att.max() + 1e-12


def test_command_compares_checkpoints(cohort, acmil_ckpt, abmil_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "stats"
    code = acmil_main(
        [
            "attention-stats",
            "--checkpoint",
            str(acmil_ckpt),
            "--checkpoint",
            str(abmil_ckpt),
            "--features",
            str(cohort.features),
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "ACMIL: 16 slides" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "attention_stats.csv").open()))
    # ACMIL (3 branches): mean + 3 rows per slide; ABMIL: mean only.
    assert sum(r["checkpoint"] == "ACMIL" for r in rows) == 16 * 4
    assert sum(r["checkpoint"] == "ABMIL" for r in rows) == 16
    for r in rows:
        vals = [float(r[k]) for k in ("top1", "top5", "top10", "top50", "top100")]
        assert all(0 < v <= 1 + 1e-6 for v in vals) and vals == sorted(vals)
    summary = json.loads((out / "attention_stats.json").read_text())
    means = summary["mean_over_slides"]
    assert set(means) == {"ACMIL", "ABMIL"} and set(means["ACMIL"]) == {"mean", "0", "1", "2"}
    assert summary["errors"] == {}
    # The CSV's rows average to the JSON's figure.
    top10 = np.mean([float(r["top10"]) for r in rows if r["checkpoint"] == "ABMIL"])
    assert means["ABMIL"]["mean"]["top10"] == pytest.approx(top10)
    assert (out / "attention_curve.png").stat().st_size > 5000


def test_bad_file_is_reported_not_fatal(cohort, acmil_ckpt, tmp_path) -> None:
    feats = tmp_path / "features"
    feats.mkdir()
    for name in ("slide_00.h5", "slide_01.h5"):
        (feats / name).symlink_to(cohort.features / name)
    (feats / "broken.h5").write_bytes(b"not hdf5")
    assert (
        main(
            ["--checkpoint", str(acmil_ckpt), "--name", "mine", "--features", str(feats), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    summary = json.loads((tmp_path / "o" / "attention_stats.json").read_text())
    assert summary["n_slides"] == 2 and "broken" in summary["errors"] and "broken.h5" in summary["errors"]["broken"]
    assert list(summary["mean_over_slides"]) == ["mine"]


def test_unknown_slide_and_missing_checkpoint_are_clear_errors(cohort, acmil_ckpt, tmp_path, capsys) -> None:
    code = acmil_main(
        [
            "attention-stats",
            "--checkpoint",
            str(acmil_ckpt),
            "--features",
            str(cohort.features),
            "--slides",
            "nope",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1 and "nope" in capsys.readouterr().err
    code = acmil_main(
        [
            "attention-stats",
            "--checkpoint",
            str(tmp_path / "x.ckpt"),
            "--features",
            str(cohort.features),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1 and "x.ckpt" in capsys.readouterr().err
