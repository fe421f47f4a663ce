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


def test_predict_slides_with_an_ensemble_writes_each_models_attention(recipe_run, tmp_path):
    """Two checkpoints of one recipe: mean probabilities, and each member's heatmap and GeoJSON attention,
    checked against each member's own prediction of the cached feature file."""
    import json

    import numpy as np
    from PIL import Image

    from acmil.checkpoint import load_model
    from acmil.features import read_features
    from acmil.inference import predict_bag
    from tests.helpers.slides import make_checkpoint

    second = make_checkpoint(tmp_path / "seed1.ckpt", recipe_run["recipe"], seed=1)
    make_slide(tmp_path / "slides" / "s1.tif", seed=21)
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(recipe_run["checkpoint"]), "--checkpoint", str(second)]
    assert main([*argv, "--slides", str(tmp_path / "slides"), "--out", str(out), "--per-model"]) == 0
    assert not (out / "failures.csv").exists()
    feats = read_features(next((out / "cache").glob("*/*/features/s1.h5")))
    own = []
    for ckpt in (recipe_run["checkpoint"], second):
        loaded = load_model(ckpt)
        own.append(predict_bag(loaded.model, feats.features, loaded.temperature))
    assert not np.allclose(own[0].mean_attention, own[1].mean_attention)
    row = next(csv.DictReader((out / "predictions.csv").open()))
    mean = np.mean([p.probabilities for p in own], axis=0)
    np.testing.assert_allclose([float(row["prob_normal"]), float(row["prob_tumour"])], mean, atol=1e-5)
    np.testing.assert_allclose(float(row["m1_prob_tumour"]), own[1].probabilities[1], atol=1e-5)
    tiles = json.loads((out / "attention" / "s1.geojson").read_text())["features"]
    for k in (0, 1):
        got = [t["properties"]["measurements"][f"attention_model_{k}"] for t in tiles]
        np.testing.assert_allclose(got, own[k].mean_attention, atol=1e-6)
    pictures = [np.asarray(Image.open(out / "heatmaps" / f"s1{s}.png")) for s in ("", "_model0", "_model1")]
    assert all(p.shape == pictures[0].shape for p in pictures)
    assert not np.array_equal(pictures[1], pictures[2])  # each member's own attention, not the mean twice
