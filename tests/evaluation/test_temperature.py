"""Temperature scaling: it lowers the ECE of a deliberately over-confident model, and once recorded in the
model card `acmil predict` and the service apply it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from acmil.checkpoint import load_model
from acmil.cli import main as acmil
from acmil.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    log_probabilities,
)
from acmil.evaluation.temperature import split_logits


def _calibrated_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution (labels drawn from it): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, 3))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(3, p=row) for row in p])
    return logits, targets


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_recovers_the_overconfidence_and_lowers_ece() -> None:
    val_logits, val_targets = _calibrated_logits(3000, 0)
    test_logits, test_targets = _calibrated_logits(3000, 1)
    overconfident = 4.0  # logits multiplied by 4: probabilities pushed towards 0 and 1
    t = fit_temperature(overconfident * val_logits, val_targets)
    assert t == pytest.approx(overconfident, rel=0.1)
    before = expected_calibration_error(_softmax(overconfident * test_logits), test_targets)
    after = expected_calibration_error(_softmax(overconfident * test_logits / t), test_targets)
    assert before > 0.1 and after < 0.03 and after < before / 4


def test_scaling_probabilities_equals_scaling_logits() -> None:
    logits, _ = _calibrated_logits(50, 2)
    probs = _softmax(logits)
    assert apply_temperature(probs, 2.5) == pytest.approx(_softmax(logits / 2.5), abs=1e-9)
    assert fit_temperature(log_probabilities(probs), _calibrated_logits(50, 2)[1]) > 0


def _overconfident_copy(run: Path, target: Path, factor: float = 8.0) -> Path:
    """The run with its slide head's weights (hence logits) multiplied by ``factor``."""
    shutil.copytree(run, target)
    ckpt = target / "checkpoints" / "best.ckpt"
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key in ("model.slide_head.1.weight", "model.slide_head.1.bias"):
        payload["state_dict"][key] = payload["state_dict"][key] * factor
    torch.save(payload, ckpt)
    return target


@pytest.mark.slow
def test_calibrate_records_temperature_applied_by_predict_and_service(
    runs: dict[str, Path], eval_cohort, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = _overconfident_copy(runs["acmil"], tmp_path / "overconfident", factor=30.0)
    ckpt = run / "checkpoints" / "best.ckpt"
    assert acmil(["calibrate", str(run)]) == 0
    record = json.loads((run / "calibration.json").read_text())
    assert record["temperature"] > 1.5  # the over-confidence is (partly: the model was never calibrated) undone
    assert record["after"]["nll"] < record["before"]["nll"] and record["after"]["ece"] <= record["before"]["ece"]
    loaded = load_model(ckpt)
    assert loaded.temperature == pytest.approx(record["temperature"])
    assert loaded.card.class_names == load_model(runs["acmil"] / "checkpoints" / "best.ckpt").card.class_names

    scaled = tmp_path / "scaled.csv"
    assert (
        acmil(["predict", "--checkpoint", str(ckpt), "--features", str(eval_cohort.features_dir), "--out", str(scaled)])
        == 0
    )
    names = loaded.card.class_names
    ids = [line.split(",")[0] for line in scaled.read_text().splitlines()[1:]]
    logits, _ = split_logits(ckpt, eval_cohort.features_dir, eval_cohort.labels_csv, ids)  # the raw model's
    probs = np.loadtxt(scaled, delimiter=",", skiprows=1, usecols=range(2, 2 + len(names)))
    assert probs == pytest.approx(_softmax(logits / record["temperature"]), abs=2e-6)  # 6 decimals in the CSV
    assert not np.allclose(probs, _softmax(logits), atol=1e-3)

    from fastapi.testclient import TestClient

    from acmil.service.config import Settings
    from acmil.service.main import create_app

    settings = Settings(checkpoint=ckpt, features_dir=eval_cohort.features_dir, slides_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        sid = "slide_0000"
        served = client.get(f"/api/v1/slides/{sid}/prediction").json()["probabilities"]
        assert client.get("/api/v1/model").json()["temperature"] == pytest.approx(record["temperature"])
    row = [line.split(",") for line in scaled.read_text().splitlines() if line.startswith(sid + ",")][0]
    assert [served[c] for c in names] == pytest.approx([float(v) for v in row[2:]], abs=2e-5)

    # acmil test reports calibration before and after the card's temperature.
    out = tmp_path / "test_out"
    assert acmil(["test", "--config", str(run / "config.yaml"), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    cal = json.loads((out / "metrics.json").read_text())["test"]["calibration"]
    assert cal["temperature"] == pytest.approx(record["temperature"])
    assert cal["temperature_scaled"]["nll"] < cal["nll"]


def test_calibrate_names_a_run_without_splits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "config.yaml").write_text("data:\n  features_dir: f\n  labels_csv: l.csv\n")
    assert acmil(["calibrate", str(tmp_path)]) == 1
    assert "no splits.json" in capsys.readouterr().err
