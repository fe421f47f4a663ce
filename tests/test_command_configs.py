"""Every command built on acmil.command: ``--print_config`` fed back through ``--config`` gives the same config,
and the flags land on the config dataclass by keyword."""

from __future__ import annotations

import importlib

import pytest

from acmil.command import config_from

# module, config class, a command line using the options whose parsing differs (nargs, append, store_true)
COMMANDS = {
    "compare": (
        "acmil.evaluation.compare",
        "CompareConfig",
        ["runs/a", "runs/b", "--names", "A", "B", "--n-boot", "50", "--seed", "3", "--labels-csv", "l.csv"],
    ),
    "report": ("acmil.evaluation.report", "ReportConfig", ["runs/a", "--n-boot", "20", "--out", "r.html"]),
    "calibrate": ("acmil.evaluation.temperature", "CalibrateConfig", ["runs/a", "--split", "test", "--out", "c.ckpt"]),
    "import-checkpoint": (
        "acmil.reference",
        "ImportCheckpointConfig",
        ["ref.pth", "--out", "m.ckpt", "--classes", "a,b", "--top-k", "3", "--recipe-from", "f.h5"],
    ),
    "predict": (
        "acmil.training.predict",
        "PredictConfig",
        ["--checkpoint", "a.ckpt", "--checkpoint", "b.ckpt", "--features", "f", "--out", "p.csv", "--per-model"],
    ),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_print_config_round_trips(command: str, tmp_path, capsys) -> None:
    module_name, class_name, argv = COMMANDS[command]
    module = importlib.import_module(module_name)
    config_class = getattr(module, class_name)
    direct = config_from(module.build_parser().parse_args(argv), config_class)
    with pytest.raises(SystemExit) as exc:
        module.build_parser().parse_args([*argv, "--print_config"])
    assert exc.value.code == 0
    (tmp_path / "config.yaml").write_text(capsys.readouterr().out)
    again = config_from(module.build_parser().parse_args(["--config", str(tmp_path / "config.yaml")]), config_class)
    assert again == direct
    assert again != config_class(**{**vars(direct), "out": "elsewhere"})  # the comparison can fail
