"""``acmil cv --selection last``: all the training folds train, no validation split, the last epoch is evaluated."""

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


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cv_selection_last_evaluates_the_final_epoch(cohort, tmp_path: Path, train_args) -> None:
    from acmil.cli import main

    run, epochs = tmp_path / "cv", 3
    assert main(["cv", "--folds", "2", "--selection", "last", *train_args(cohort, run, epochs)]) == 0
    summary = json.loads((run / "cv_summary.json").read_text())
    assert summary["selection"] == "last" and len(summary["folds"]) == 2
    for k in range(2):
        fold = run / f"fold_{k}"
        splits = json.loads((fold / "splits.json").read_text())
        assert splits["val"] == []  # no validation split: every non-test case trains
        assert sorted(splits["train"] + splits["test"]) == sorted(cohort.labels)
        best = torch.load(fold / "checkpoints" / "best.ckpt", weights_only=True)
        last = torch.load(fold / "checkpoints" / "last.ckpt", weights_only=True)
        assert best["epoch"] == last["epoch"] == epochs - 1  # the final epoch, not a selected one
        for name, value in last["state_dict"].items():
            torch.testing.assert_close(best["state_dict"][name], value, rtol=0, atol=0)
        # No validation ever ran (no selection metric logged), and metrics.json evaluates those final weights.
        logged = _csv(fold / "logs" / "csv" / "metrics.csv")
        assert not any(r.get("val/selection") for r in logged)
        rows = [r for r in _csv(fold / "predictions.csv") if r["split"] == "test"]
        assert {r["slide_id"] for r in rows} == set(splits["test"])
        model = load_model(fold / "checkpoints" / "last.ckpt").model
        for row in rows[:4]:
            feats = read_features(cohort.features_dir / f"{row['slide_id']}.h5").features
            assert float(row["prob_tumour"]) == pytest.approx(
                float(predict_bag(model, feats).probabilities[1]), abs=1e-5
            )
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["test"]["auc"] == pytest.approx(summary["folds"][k]["test"]["auc"])
    assert np.isfinite(summary["pooled_oof"]["auc"])


def test_cv_rejects_an_unknown_selection(capsys: pytest.CaptureFixture) -> None:
    from acmil.training.cv import main

    with pytest.raises(SystemExit):
        main(["--folds", "2", "--selection", "first"])
    assert "--selection" in capsys.readouterr().err


def test_train_without_val_fraction_zero_still_needs_a_validation_split(cohort, tmp_path: Path) -> None:
    """A CSV split column without val rows is still refused (only an explicit val_fraction 0 means 'last')."""
    from acmil.training.cohort import DataValidationError
    from acmil.training.data import FeatureDataModule

    labels = tmp_path / "labels.csv"
    rows = _csv(cohort.labels_csv)
    with labels.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "split"])
        writer.writeheader()
        writer.writerows({**r, "split": "test" if i % 4 == 0 else "train"} for i, r in enumerate(rows))
    with pytest.raises(DataValidationError, match="val_fraction 0"):
        FeatureDataModule(str(cohort.features_dir), str(labels)).prepare()


def _without_run_dir(args: list[str]) -> list[str]:
    i = args.index("--trainer.default_root_dir")
    return args[:i] + args[i + 2 :]


def test_cv_composes_the_folds_results(cohort, tmp_path: Path, train_args) -> None:
    """The run directory and the cv options come from a --config file (no argv scanning), and the pooled
    out-of-fold predictions are the folds' own numbers, not strings read back from their predictions.csv."""
    from acmil.training.cv import cv_config, run_cv

    run = tmp_path / "cv"
    group = tmp_path / "cv.yaml"
    group.write_text(f"folds: 2\nselection: last\ntrainer:\n  default_root_dir: {run}\n")
    config = cv_config([*_without_run_dir(train_args(cohort, tmp_path / "unused", 1)), "--config", str(group)])
    assert (config.folds, config.selection, config.run_dir) == (2, "last", run)
    result = run_cv(config)
    assert [r.run_dir for r in result.folds] == [run / "fold_0", run / "fold_1"]
    tests = [r.predictions.select("test") for r in result.folds]
    assert result.oof.slide_ids == [s for t in tests for s in t.slide_ids]
    np.testing.assert_array_equal(result.oof.probabilities, np.concatenate([t.probabilities for t in tests]))
    assert sorted(result.oof.slide_ids) == sorted(cohort.labels)
    assert json.loads((run / "cv_summary.json").read_text()) == json.loads(json.dumps(result.summary))
    rows = _csv(run / "oof_predictions.csv")
    assert [r["slide_id"] for r in rows] == result.oof.slide_ids
    tumour = result.oof.class_names.index("tumour")
    assert [float(r["prob_tumour"]) for r in rows] == pytest.approx(result.oof.probabilities[:, tumour], abs=1e-6)


@pytest.mark.parametrize(
    "args",
    [["--trainer.strategy", "ddp"], ["--trainer.devices", "2"], ["--config", "STRATEGY_YAML"]],
)
def test_cv_refuses_ddp_from_the_parsed_trainer(args: list[str], tmp_path: Path) -> None:
    from acmil.training.cv import check_single_process, cv_config, run_cv

    yaml_file = tmp_path / "strategy.yaml"
    yaml_file.write_text("trainer:\n  strategy:\n    class_path: lightning.pytorch.strategies.DDPStrategy\n")
    base = ["--data.features_dir", str(tmp_path / "ddp_features"), "--data.labels_csv", str(tmp_path / "l.csv")]
    config = cv_config([*base, *[str(yaml_file) if a == "STRATEGY_YAML" else a for a in args]])
    with pytest.raises(ValueError, match="one after another in one process"):
        run_cv(config)
    # A path that merely contains "ddp" is no strategy (the old substring test refused it).
    check_single_process(cv_config(base).train["trainer"])
