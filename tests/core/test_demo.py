"""``acmil demo --quick`` end to end: synthetic slides -> real preprocessing (EfficientNet-Lite0) -> ACMIL and
ABMIL training -> analyses -> report. The full-size demo is the README's first command; this is its CI size."""

from __future__ import annotations

import json
import re

import pytest

from acmil.checkpoint import load_model
from acmil.cli import main as acmil_main


@pytest.mark.slow
def test_quick_demo(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert acmil_main(["demo", "--quick", "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    s = json.loads((out / "demo.json").read_text())

    # Every stage ran and wrote what it promises.
    import torch

    for arch in ("acmil", "abmil"):
        run = out / "runs" / arch
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "predictions.csv").is_file()
        # The demo keeps the final epoch (validation metrics saturate at once on 2 val slides): best.ckpt,
        # which training evaluates and the analyses read, must be that epoch's.
        epoch = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["epoch"]
        assert epoch == s["size"]["epochs"] - 1
        assert set(s["metrics"][arch]) >= {"val", "test"}
        for sid in s["heatmap_slides"]:
            assert (out / "analysis" / "heatmaps" / arch / f"{sid}_mean.png").stat().st_size > 1000
    n_slides = s["size"]["n_slides"]
    assert len(list((out / "preprocess" / "features").glob("*.h5"))) == n_slides
    assert (out / "analysis" / "umap" / "umap.png").is_file()
    assert (out / "analysis" / "attention_stats" / "attention_curve.png").is_file()
    assert set(s["attention_stats"]) == {"ACMIL", "ABMIL"}

    # The report links figures that exist, relative to itself.
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 5 and all((out / link).is_file() for link in links)
    html = (out / "report.html").read_text()
    assert html.count("<img") == len(links) and "Does attention find the tumour?" in html

    # Real ImageNet weights were used (the `weights` extra is installed in CI), and the numbers are real.
    assert s["encoder_weights"] != "random"
    loc = s["localisation"]
    assert loc["acmil"]["n_slides"] == n_slides // 2  # every tumour slide has both classes of tiles
    assert loc["acmil"]["mean_auc"] > 0.75, loc  # the quick size trains on a handful of slides
    assert s["metrics"]["acmil"]["test"]["auc"] >= 0.5

    # Progress per stage (numbered, timed) and per tenth of the epochs with an estimate; times per stage at the end.
    assert re.search(r"\[demo\] 2/13 preprocess \(tf_efficientnet_lite0\): [\d.]+ s \(total", printed)
    assert re.search(r"\[demo\] train ACMIL: epoch 10/100, \d+ s, about [\d.]+ (s|min) left", printed)
    assert "time per stage:" in printed and re.search(r"\n  total +[\d.]+ s\n", printed)
    assert set(s["stage_seconds"]) >= {"synthetic cohort", "train ACMIL", "report", "viewer files (OpenSeadragon)"}

    # The report draws heatmaps as the viewer does by default, says how, and shows its wide figures large.
    from acmil import heatmap

    drawn = json.loads((out / "analysis" / "heatmaps" / "acmil" / "heatmaps.json").read_text())
    assert (drawn["normalisation"], drawn["cmap"], drawn["smoothing_sigma"], drawn["transparent_below"]) == (
        heatmap.DEFAULT_NORMALISATION,
        heatmap.DEFAULT_CMAP,
        heatmap.DEFAULT_SMOOTHING,
        heatmap.DEFAULT_TRANSPARENT_BELOW,
    )
    assert heatmap.scaling_label() in md  # (the HTML escapes its apostrophe)
    assert html.count('<figure class="wide">') == 4 and "click to enlarge" in html

    # ACMIL against ABMIL on the same held-out slides: acmil compare's table and figures, in the report too.
    cmp = s["compare"]
    assert "error" not in cmp, cmp
    held_out = s["splits"]["val"] + s["splits"]["test"]
    assert cmp["names"] == ["ACMIL", "ABMIL"] and cmp["slides"]["shared"] == len(held_out)
    assert {r["test"] for r in cmp["rows"]} >= {"paired bootstrap"}
    assert (out / "analysis" / "compare" / "compare.png").is_file() and "ACMIL against ABMIL" in md
    assert "ACMIL against ABMIL on the same held-out slides" in printed

    # The card says what the model was trained on: synthetic slides.
    cohort = load_model(out / "runs" / "acmil" / "checkpoints" / "best.ckpt").card.extra["training_cohort"]
    assert cohort["n_slides"] == n_slides and sum(cohort["classes"].values()) == n_slides
    assert "SYNTHETIC" in cohort["description"] and cohort["encoder"] == "tf_efficientnet_lite0"

    # The viewer command names the real outputs.
    assert s["serve_command"] in printed and "acmil serve --checkpoint" in printed
    assert str(out / "runs" / "acmil" / "checkpoints" / "best.ckpt") in s["serve_command"]


def test_demo_refuses_a_foreign_folder(tmp_path, capsys) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert acmil_main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "not an acmil demo folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_report_shows_wide_figures_large_and_linked() -> None:
    from acmil.analysis.report import to_html, to_markdown

    blocks = [("figure", "analysis/umap/umap.png", "UMAP"), ("images", [("a.png", "thumb")])]
    html = to_html(blocks)
    assert '<figure class="wide"><a href="analysis/umap/umap.png"' in html and "click to enlarge" in html
    assert "figure.wide img{width:100%;max-width:1100px" in html  # not the thumbnails' 360 px
    assert "[![UMAP](analysis/umap/umap.png)](analysis/umap/umap.png)" in to_markdown(blocks)


def test_demo_training_keeps_the_final_epoch_by_configuration(tmp_path, capsys) -> None:
    """The demo's training stage on generated features: its config (the shipped acmil.yaml plus
    ``checkpoint.monitor: null``) keeps the final epoch, and the stage's result is what the run wrote."""
    import torch

    from acmil.demo import _heatmap_slides, _train, train_config, write_config
    from acmil.synthetic.features import make_cohort

    cohort = make_cohort(tmp_path / "c", n_slides=20, n_patches=(10, 20), dim=16, seed=0)
    run = tmp_path / "runs" / "acmil"
    config = train_config("acmil", 3, cohort.features_dir, cohort.labels_csv, run, seed=1)
    assert config["model"]["arch_args"]["n_branches"] == 5  # the shipped recipe, not a copy in demo.py
    config["trainer"]["check_val_every_n_epoch"] = 1  # the demo validates every 10th of its 100 epochs
    write_config(tmp_path / "configs" / "demo_acmil.yaml", "acmil", config)
    result = _train(config)
    best = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert best["epoch"] == 2 == torch.load(result.last_checkpoint, weights_only=True)["epoch"]
    assert result.metrics == json.loads((run / "metrics.json").read_text())
    assert result.splits == json.loads((run / "splits.json").read_text())
    assert "[demo] train ACMIL: epoch 3/3" in capsys.readouterr().out
    shown = _heatmap_slides(result.predictions, 3)
    held_out = set(result.splits["val"] + result.splits["test"])
    assert shown and set(shown) <= held_out
    assert [cohort.labels[s] for s in shown][-1] == "normal" and "tumour" in [cohort.labels[s] for s in shown]
    # The written config replays the run.
    from acmil.training.cli import run_train

    again = run_train(
        [
            "--config",
            str(tmp_path / "configs" / "demo_acmil.yaml"),
            "--trainer.default_root_dir",
            str(tmp_path / "again"),
        ]
    )
    assert again.metrics["test"]["auc"] == pytest.approx(result.metrics["test"]["auc"])
