"""End to end: `acmil train`, `test`, `predict` and `cv` on a generated cohort with a planted signal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from acmil.checkpoint import load_model
from acmil.features import read_features
from acmil.inference import predict_bag
from acmil.training.cli import run_train
from acmil.training.module import MILModule

METRICS = {"accuracy", "balanced_accuracy", "f1_macro", "auc"}
EVALUATION = {"ci", "calibration", "confusion_matrix"}  # acmil.evaluation.summarise, beside the point metrics


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _val_rows(run: Path) -> list[dict]:
    return [r for r in _csv(run / "logs" / "csv" / "metrics.csv") if r.get("val/selection")]


def test_trains_to_high_auc_quickly(trained_run: dict) -> None:
    metrics = trained_run["metrics"]
    assert metrics["val"]["auc"] >= 0.95, metrics  # in 10 epochs; their speed: benchmarks/bench_training.py


def test_run_directory_contents(trained_run: dict, cohort) -> None:
    run = trained_run["run"]
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) == {"val", "test"} and saved == trained_run["metrics"]
    for split in ("val", "test"):
        assert set(saved[split]) == METRICS | EVALUATION and all(0.0 <= saved[split][m] <= 1.0 for m in METRICS)
    splits = json.loads((run / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(cohort.labels)
    rows = _csv(run / "predictions.csv")
    assert list(rows[0]) == ["slide_id", "split", "label", "predicted", "prob_normal", "prob_tumour"]
    assert sorted(r["slide_id"] for r in rows) == sorted(splits["val"] + splits["test"])
    assert all(r["label"] == cohort.labels[r["slide_id"]] for r in rows)
    assert all(abs(float(r["prob_normal"]) + float(r["prob_tumour"]) - 1) < 1e-4 for r in rows)
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "config.yaml").is_file()
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_logs_losses_by_name_and_cosine_schedule(trained_run: dict) -> None:
    rows = _csv(trained_run["run"] / "logs" / "csv" / "metrics.csv")
    columns = set(rows[0])
    assert {
        "train/branch_ce",
        "train/slide_ce",
        "train/diversity",
        "train/loss",
        "train/loss_step",
        "val/loss",
        "val/branch_ce",
        "val/f1_macro",
        "val/auc",
        "val/selection",
    } <= columns
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert lrs[0] == pytest.approx(5e-3, rel=0.01)  # first logged at step 10 of a per-step decay
    assert lrs[-1] < 0.02 * lrs[0] and all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_selected_checkpoint_is_the_best_validation_epoch(trained_run: dict) -> None:
    vals = _val_rows(trained_run["run"])
    best = max(vals, key=lambda r: float(r["val/selection"]))  # max() keeps the first maximum, as the callback
    saved = trained_run["metrics"]["val"]
    assert float(best["val/auc"]) == pytest.approx(saved["auc"], abs=1e-4)
    assert float(best["val/f1_macro"]) == pytest.approx(saved["f1_macro"], abs=1e-4)
    ckpt = torch.load(trained_run["run"] / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["epoch"] == int(best["epoch"])


def test_best_checkpoint_loads_without_lightning(trained_run: dict, cohort) -> None:
    path = trained_run["run"] / "checkpoints" / "best.ckpt"
    loaded = load_model(path)
    assert loaded.card.arch == "acmil" and loaded.card.class_names == ["normal", "tumour"]
    assert loaded.card.in_dim == 32 and loaded.card.encoder["encoder"] == "synthetic"
    module = MILModule.load_from_checkpoint(path, map_location="cpu").eval()
    rows = {r["slide_id"]: r for r in _csv(trained_run["run"] / "predictions.csv")}
    for sid, row in list(rows.items())[:6]:
        feats = read_features(cohort.features_dir / f"{sid}.h5").features
        pred = predict_bag(loaded.model, feats)
        with torch.no_grad():
            ref = torch.softmax(module(torch.from_numpy(feats)[None]).logits, -1)[0].numpy()
        np.testing.assert_allclose(pred.probabilities, ref, atol=1e-6)
        assert float(row["prob_tumour"]) == pytest.approx(float(pred.probabilities[1]), abs=1e-5)


def test_predict_command(trained_run: dict, cohort, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from acmil.cli import main

    out = tmp_path / "pred.csv"
    ckpt = str(trained_run["run"] / "checkpoints" / "best.ckpt")
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                ckpt,
                "--features",
                str(cohort.features_dir),
                "--out",
                str(out),
                "--labels-csv",
                str(cohort.labels_csv),
            ]
        )
        == 0
    )
    rows = _csv(out)
    assert len(rows) == 60 and list(rows[0]) == ["slide_id", "label", "predicted", "prob_normal", "prob_tumour"]
    correct = np.mean([r["label"] == r["predicted"] for r in rows])
    assert correct > 0.8
    # One unreadable file is reported and skipped; the others are still predicted.
    bad = tmp_path / "feats"
    bad.mkdir()
    for sid in ("slide_0000", "slide_0001"):
        (bad / f"{sid}.h5").write_bytes((cohort.features_dir / f"{sid}.h5").read_bytes())
    (bad / "broken.h5").write_text("nope")
    assert main(["predict", "--checkpoint", ckpt, "--features", str(bad), "--out", str(out)]) == 1
    assert "broken.h5" in capsys.readouterr().err
    assert [r["slide_id"] for r in _csv(out)] == ["slide_0000", "slide_0001"]


def test_test_command_reproduces_run_metrics(trained_run: dict, cohort, tmp_path: Path) -> None:
    from acmil.cli import main

    run = trained_run["run"]
    assert (
        main(
            [
                "test",
                "--checkpoint",
                str(run / "checkpoints" / "best.ckpt"),
                "--data.features_dir",
                str(cohort.features_dir),
                "--data.labels_csv",
                str(cohort.labels_csv),
                "--data.splits_file",
                str(run / "splits.json"),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    got = json.loads((tmp_path / "metrics.json").read_text())["test"]
    for k in METRICS:
        assert got[k] == pytest.approx(trained_run["metrics"]["test"][k], abs=1e-6)
    # The run's saved config replays its data settings, seed included, so the same test split is evaluated.
    out = tmp_path / "from_config"
    assert (
        main(
            [
                "test",
                "--config",
                str(run / "config.yaml"),
                "--checkpoint",
                str(run / "checkpoints" / "best.ckpt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    replayed = json.loads((out / "metrics.json").read_text())["test"]
    assert {k: replayed[k] for k in METRICS} == pytest.approx({k: trained_run["metrics"]["test"][k] for k in METRICS})


@pytest.mark.slow
def test_same_seed_same_run(cohort, tmp_path: Path, train_args) -> None:
    a = run_train(train_args(cohort, tmp_path / "a", 2, 7)).metrics
    b = run_train(train_args(cohort, tmp_path / "b", 2, 7)).metrics
    assert a == b
    losses = [
        [r["train/loss_step"] for r in _csv(p / "logs/csv/metrics.csv") if r["train/loss_step"]]
        for p in (tmp_path / "a", tmp_path / "b")
    ]
    assert losses[0] == losses[1] and len(losses[0]) > 3
    assert (tmp_path / "a/splits.json").read_text() == (tmp_path / "b/splits.json").read_text()


@pytest.mark.slow
def test_batched_padded_bags_with_bf16(cohort, tmp_path: Path, train_args) -> None:
    metrics = run_train(
        train_args(
            cohort,
            tmp_path,
            2,
            1,
            "--data.batch_size",
            "4",
            "--trainer.precision",
            "bf16-mixed",
            "--data.num_workers",
            "1",
        )
    ).metrics
    assert set(metrics["val"]) == METRICS | EVALUATION
    steps = [r for r in _csv(tmp_path / "logs/csv/metrics.csv") if r.get("train/loss")]
    assert len(steps) == 2


@pytest.mark.slow
def test_cv(cohort, tmp_path: Path, train_args) -> None:
    from acmil.cli import main

    run = tmp_path / "cv"
    code = main(["cv", "--folds", "3", *train_args(cohort, run, 2)])
    assert code == 0
    summary = json.loads((run / "cv_summary.json").read_text())
    assert set(summary["metrics"]) == METRICS
    assert all(set(v) == {"mean", "std"} for v in summary["metrics"].values())
    assert len(summary["folds"]) == 3
    assert all("ci" in f["test"] for f in summary["folds"])  # bootstrap CIs per fold and pooled out-of-fold
    assert summary["pooled_oof"]["ci"]["n_slides"] == len(cohort.labels)
    aucs = [f["test"]["auc"] for f in summary["folds"]]
    assert summary["metrics"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    oof = _csv(run / "oof_predictions.csv")
    assert sorted(r["slide_id"] for r in oof) == sorted(cohort.labels)  # each slide once, out of fold
    for k in range(3):
        splits = json.loads((run / f"fold_{k}" / "splits.json").read_text())
        assert {r["slide_id"] for r in oof if r["fold"] == str(k)} == set(splits["test"])
        assert not set(splits["test"]) & set(splits["train"] + splits["val"])


@pytest.mark.parametrize("config", ["configs/abmil.yaml", "configs/mean.yaml", "configs/max.yaml"])
def test_other_models_train_on_three_classes(config: str, tmp_path: Path) -> None:
    from acmil.synthetic.features import make_cohort

    c = make_cohort(tmp_path / "c", n_slides=30, n_patches=(20, 40), dim=16, class_names=("a", "b", "c"), seed=2)
    run = tmp_path / "run"
    metrics = run_train(
        [
            "--config",
            config,
            "--data.features_dir",
            str(c.features_dir),
            "--data.labels_csv",
            str(c.labels_csv),
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(run),
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ]
    ).metrics
    assert set(metrics["val"]) == METRICS | EVALUATION
    card = load_model(run / "checkpoints" / "best.ckpt").card
    assert card.arch == config.split("/")[1].removesuffix(".yaml") and sorted(card.class_names) == ["a", "b", "c"]
    # class order = order of first appearance in the CSV (DESIGN.md), the same in the card and the CSV columns
    assert list(_csv(run / "predictions.csv")[0])[-3:] == [f"prob_{c}" for c in card.class_names]


def test_predict_with_every_file_skipped_keeps_the_previous_csv(
    trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from acmil.cli import main

    out = tmp_path / "pred.csv"
    out.write_text("slide_id,predicted\nearlier,tumour\n")
    bad = tmp_path / "feats"
    bad.mkdir()
    (bad / "broken.h5").write_text("nope")
    ckpt = str(trained_run["run"] / "checkpoints" / "best.ckpt")
    assert main(["predict", "--checkpoint", ckpt, "--features", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "none of the 1 feature file(s)" in err and f"{out} was not written" in err and "broken.h5" in err
    assert out.read_text() == "slide_id,predicted\nearlier,tumour\n"
