"""The analyses' ``run_<command>`` return what they wrote: the summary equals the JSON file, the paths exist."""

from __future__ import annotations

import json

import pytest

from acmil.analysis.attention_stats import AttentionStatsConfig, run_attention_stats
from acmil.analysis.heatmaps import HeatmapConfig, run_heatmap
from acmil.analysis.localisation import LocalisationConfig, run_localisation
from acmil.analysis.umap_plot import UmapConfig, run_umap

SLIDES = ["slide_00", "slide_01", "slide_03"]


def _json(path):
    return json.loads(path.read_text())


def test_run_heatmap_returns_the_files_and_summary(cohort, acmil_ckpt, tmp_path) -> None:
    out = tmp_path / "h"
    config = HeatmapConfig(
        checkpoint=str(acmil_ckpt), features=str(cohort.features), out=str(out), slide_ids=SLIDES[:2], no_branches=True
    )
    result = run_heatmap(config)
    assert result.paths == [out / "slide_00_mean.png", out / "slide_01_mean.png", out / "heatmaps.json"]
    assert all(p.stat().st_size > 0 for p in result.paths)
    assert result.summary == _json(out / "heatmaps.json") and set(result.slides) == set(SLIDES[:2])
    with pytest.raises(FileNotFoundError, match="slides folder not found"):
        run_heatmap(HeatmapConfig(**{**vars(config), "slides": str(tmp_path / "none")}))


def test_run_attention_stats_returns_the_means_of_the_json(cohort, acmil_ckpt, abmil_ckpt, tmp_path) -> None:
    out = tmp_path / "a"
    result = run_attention_stats(
        AttentionStatsConfig(
            checkpoint=[str(acmil_ckpt), str(abmil_ckpt)],
            name=["ours", "base"],
            features=str(cohort.features),
            out=str(out),
        )
    )
    assert result.summary == _json(out / "attention_stats.json")
    assert set(result.summary["mean_over_slides"]) == {"ours", "base"}
    assert 0 < result.summary["mean_over_slides"]["ours"]["mean"]["top1"] <= 1
    assert all(p.is_file() for p in result.paths)


def test_run_localisation_returns_the_aucs_of_the_json(cohort, acmil_ckpt, tmp_path) -> None:
    out = tmp_path / "l"
    result = run_localisation(
        LocalisationConfig(
            checkpoint=str(acmil_ckpt), features=str(cohort.features), masks=str(cohort.masks), out=str(out)
        )
    )
    assert result.summary == _json(out / "localisation.json")
    assert result.summary["n_slides"] > 0 and 0 <= result.summary["mean_auc"] <= 1
    assert result.paths == [out / "localisation.csv", out / "localisation.json"]
    with pytest.raises(ValueError, match="exactly one of --masks and --annotations"):
        run_localisation(LocalisationConfig(checkpoint=str(acmil_ckpt), features=str(cohort.features), out=str(out)))


def test_run_umap_returns_the_points_drawn(cohort, acmil_ckpt, tmp_path) -> None:
    out = tmp_path / "u"
    result = run_umap(
        UmapConfig(
            checkpoint=str(acmil_ckpt),
            features=str(cohort.features),
            out=str(out),
            slides=SLIDES,
            max_points_per_slide=30,
        )
    )
    assert result.summary == _json(out / "umap.json")
    assert result.summary["n_points"] == sum(d["n_drawn"] for d in result.summary["slides"].values()) <= 90
    assert len((out / "umap.csv").read_text().splitlines()) == result.summary["n_points"] + 1
    assert all(p.is_file() for p in result.paths)
