"""Distributed data parallel on CPU: two processes (gloo), launched the way a user launches it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(cohort, tmp_path: Path, repo_root: Path, train_args) -> None:
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "acmil",
        "train",
        *train_args(cohort, run, 3, 1),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "train.log").read_text()  # Lightning's messages are kept there, not shown
    assert "distributed_backend=gloo" in log and "2 processes" in log
    saved = json.loads((run / "metrics.json").read_text())  # written once, by rank 0
    assert set(saved) == {"val", "test"}
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "predictions.csv").is_file()
    assert not list(run.glob(".*.partial"))
    # The validation metrics logged during training are computed over BOTH processes' slides: at the selected
    # epoch they equal a single-process evaluation of the selected checkpoint on the whole validation split.
    with (run / "logs" / "csv" / "metrics.csv").open(newline="") as fh:
        vals = [r for r in csv.DictReader(fh) if r.get("val/selection")]
    best = max(vals, key=lambda r: float(r["val/selection"]))
    n_val = len(json.loads((run / "splits.json").read_text())["val"])
    assert n_val % 2 == 0  # no sample duplicated by the distributed sampler
    assert float(best["val/auc"]) == pytest.approx(saved["val"]["auc"], abs=1e-4)
    assert float(best["val/f1_macro"]) == pytest.approx(saved["val"]["f1_macro"], abs=1e-4)
