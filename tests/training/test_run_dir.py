"""The run directory: checkpoints survive a full disk whole, a second run never mixes into a first one,
and a killed run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from acmil.checkpoint import load_model
from acmil.training.cli import run_train
from acmil.training.rundir import RunDirError

HERE = Path(__file__).resolve().parent


def test_full_disk_keeps_the_previous_checkpoints_whole(cohort, tmp_path, train_args) -> None:
    from tests.helpers.disk_full import small_tmpfs

    with small_tmpfs(tmp_path / "mnt", "2m") as disk:
        run = disk / "run"
        sys.path.insert(0, str(HERE))
        try:
            with pytest.raises(OSError, match=r"cannot write .*checkpoints/(best|last)\.ckpt: disk full"):
                run_train(
                    [
                        *train_args(cohort, run, 4),
                        "--trainer.logger",
                        "false",
                        "--trainer.callbacks+=fill_disk_callback.FillDiskAtSecondEpoch",
                    ]
                )
        finally:
            sys.path.remove(str(HERE))
        ckpts = run / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left
        assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 0
        assert load_model(ckpts / "best.ckpt").card.extra["epoch"] == 0


def test_a_second_run_into_the_same_directory_is_refused_unless_overwrite(
    trained_run, cohort, tmp_path, train_args
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"old run")  # anything in the folder: refused before the cohort is read
    before = sorted(run.iterdir())
    with pytest.raises(RunDirError, match=r"is not empty \(holds best.ckpt\).*--resume.*--overwrite"):
        run_train(train_args(cohort, run, 1))
    assert sorted(run.iterdir()) == before
    # --overwrite replaces a run's files and keeps what is not a run's
    (run / "config.yaml").write_text("model: old\n")
    metrics = run_train([*train_args(cohort, run, 1), "--overwrite"]).metrics
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert (run / "best.ckpt").read_bytes() == b"old run" and "model: old" not in (run / "config.yaml").read_text()
    with pytest.raises(RunDirError, match="give one of them"):
        run_train([*train_args(cohort, run, 1), "--overwrite", "--resume"])


def without(args: list[str], option: str) -> list[str]:
    """``args`` less ``option`` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "acmil", "train", *args]


@pytest.mark.slow
def test_kill_9_then_resume_completes_the_run(cohort, tmp_path, train_args, repo_root) -> None:
    run = tmp_path / "run"
    args = without(train_args(cohort, run, 12), "--trainer.enable_progress_bar")  # its epoch lines are checked
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(args), cwd=repo_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = torch.load(last, weights_only=True)["epoch"]  # whole and loadable after the kill
    assert killed_at < 11 and not (run / "metrics.json").exists()
    again = subprocess.run(_cli(args), cwd=repo_root, env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr
    done = subprocess.run(_cli([*args, "--resume"]), cwd=repo_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming {run}" in done.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 11
    first_logged = [line for line in done.stderr.splitlines() if line.startswith("epoch ")][0]
    assert first_logged.startswith(f"epoch {killed_at + 2}/12")  # continued, not started again
    assert set(json.loads((run / "metrics.json").read_text())) == {"val", "test"}
    assert not list((run / "checkpoints").glob(".*partial"))


def test_a_config_with_its_own_monitorless_checkpoint_still_trains(cohort, tmp_path, train_args) -> None:
    """The demo's config keeps the final epoch with a ModelCheckpoint without monitor; last.ckpt must not clash."""
    import yaml

    run = tmp_path / "run"
    config = tmp_path / "final.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {
                                "dirpath": str(run / "checkpoints"),
                                "filename": "final",
                                "save_top_k": 1,
                                "enable_version_counter": False,
                            },
                        }
                    ]
                }
            }
        )
    )
    assert run_train([*train_args(cohort, run, 2), "--config", str(config)]).metrics["val"]
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "final.ckpt", "last.ckpt"}
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_yaml_chooses_the_checkpoint_the_loggers_and_the_callbacks(cohort, tmp_path: Path, train_args) -> None:
    """Model selection, loggers and callbacks are configuration: ``checkpoint.monitor: null`` keeps the last
    epoch in best.ckpt, ``trainer.logger`` replaces the TensorBoard + CSV pair, ``trainer.callbacks`` adds."""
    run, logs = tmp_path / "run", tmp_path / "elsewhere"
    config = tmp_path / "choices.yaml"
    config.write_text(
        "checkpoint:\n  monitor: null\n"
        "trainer:\n"
        "  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n"
        f"    init_args: {{save_dir: {logs}, name: mine, version: v}}\n"
        "  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {tmp_path / 'extra'}, filename: first, monitor: null}}\n"
    )
    result = run_train([*train_args(cohort, run, 3), "--config", str(config)])
    best = torch.load(result.best_checkpoint, weights_only=True)
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert best["epoch"] == last["epoch"] == 2  # the last epoch, though validation ran every epoch
    assert (logs / "mine" / "v" / "metrics.csv").is_file() and not (run / "logs").exists()
    assert (tmp_path / "extra" / "first.ckpt").is_file()  # the config's own callback ran beside them
    assert json.loads((run / "metrics.json").read_text()) == result.metrics
    assert "monitor: null" in (run / "config.yaml").read_text()  # and the run's config replays the choice
