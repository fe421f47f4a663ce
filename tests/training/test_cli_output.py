"""What a user sees: ``--help`` at once without Lightning, quiet runs, exact option names."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import pytest

# What made --help take 5-12 s (torch alone is seconds to import). Timings are in benchmarks/bench_training.py
# --help-times (0.1-0.2 s each on an idle machine); a timed test would fail on a busy one. jsonargparse (~75 ms
# to import) is allowed: it is the parser every non-Lightning command shares (acmil.command).
HEAVY = ("torch", "lightning", "numpy", "h5py", "sklearn", "torchmetrics")
LIGHT_CHECK = (
    "import sys; from acmil.cli import main; code = main({argv!r}); "
    f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), 'CODE', code)"
)


@pytest.mark.parametrize("command", ["train", "test", "cv", "predict"])
def test_help_is_instant_short_and_without_lightning(command: str, repo_root) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_CHECK.format(argv=[command, "--help"])],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "HEAVY [] CODE 0" in done.stdout, done.stdout[-500:]
    text = done.stdout
    assert "example:" in text and f"acmil {command} " in text.split("example:")[1]
    assert len(text.splitlines()) < 70


def test_train_help_lists_the_common_options_first_and_each_is_real(capsys) -> None:
    from acmil.training.cli import _train_summary
    from acmil.training.lightning_run import ACMILCLI

    text = _train_summary().format_help()
    options = text.split("most used:")[1]
    order = [
        options.index(o)
        for o in ("--data.features_dir", "--trainer.max_epochs", "--config", "--seed_everything", "--trainer.devices")
    ]
    assert order == sorted(order) and "--help-all" in text and "--print_config" in text
    shown = sorted(set(re.findall(r"--((?:data|trainer|model)\.\w+)", text)))
    samples = {
        "features_dir": "f",
        "labels_csv": "l.csv",
        "default_root_dir": "r",
        "accelerator": "cpu",
        "lr": "0.01",
        "val_fraction": "0.2",
        "test_fraction": "0.2",
    }
    argv = [x for o in shown for x in (f"--{o}", samples.get(o.split(".")[1], "1"))]
    with pytest.raises(SystemExit) as info, warnings.catch_warnings():  # every option shown parses (exit 2 if not)
        warnings.simplefilter("ignore")  # "args ... sys.argv": on purpose
        ACMILCLI([*argv, "--print_config"])
    assert info.value.code in (0, None) and len(shown) >= 10
    assert "max_epochs: 1" in capsys.readouterr().out


def test_abbreviated_options_are_errors(capsys) -> None:
    from acmil.cli import main

    assert main(["train", "--data.features_dir", "f", "--data.labels_csv", "l", "--trainer.max_epoch", "3"]) != 0
    assert "--trainer.max_epoch" in capsys.readouterr().err
    assert main(["predict", "--check", "x", "--features", "f", "--out", "o"]) == 2
    assert main(["heatmap", "--check", "x", "--features", "f", "--out", "o"]) == 2


def test_a_run_shows_progress_metrics_and_the_run_directory_only(cohort, tmp_path, train_args, repo_root) -> None:
    run = tmp_path / "run"
    args = train_args(cohort, run, 2)
    for option in ("--trainer.enable_progress_bar", "--trainer.enable_model_summary"):  # the defaults, as a user's
        i = args.index(option)
        args = args[:i] + args[i + 2 :]
    done = subprocess.run(
        [sys.executable, "-m", "acmil", "train", *args], cwd=repo_root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    for noise in (
        "GPU available",
        "TPU available",
        "litlogger",
        "LeafSpec",
        "Total params",
        "| Name",
        '"val": {',
        "Warning",
        "warn",
    ):
        assert noise not in shown, noise
    assert re.search(r"^epoch 1/2: .*val auc \d\.\d{3}.*left\)$", done.stderr, re.M)
    assert re.search(r"^val +\d\.\d{3} +\d\.\d{3}", done.stdout, re.M) and "f1_macro" in done.stdout
    assert f"run directory: {run}" in done.stdout
    log = (run / "train.log").read_text()
    assert "GPU available" in log and "Total params" in log
