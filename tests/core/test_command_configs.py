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
    "heatmap": (
        "acmil.analysis.heatmaps",
        "HeatmapConfig",
        [
            "--checkpoint",
            "m.ckpt",
            "--features",
            "f",
            "--out",
            "o",
            "--slide-ids",
            "s1",
            "s2",
            "--format",
            "png,geojson",
        ]
        + ["--no-branches", "--normalisation", "rank", "--alpha", "0.3"],
    ),
    "umap": (
        "acmil.analysis.umap_plot",
        "UmapConfig",
        ["--checkpoint", "m.ckpt", "--features", "f", "--out", "o", "--annotations", "a", "--classes", "Tumor,Other"],
    ),
    "attention-stats": (
        "acmil.analysis.attention_stats",
        "AttentionStatsConfig",
        ["--checkpoint", "a.ckpt", "--name", "A", "--checkpoint", "b.ckpt", "--name", "B", "--features", "f"]
        + ["--out", "o", "--slides", "s1", "s2"],
    ),
    "localisation": (
        "acmil.analysis.localisation",
        "LocalisationConfig",
        ["--checkpoint", "m.ckpt", "--features", "f", "--out", "o", "--masks", "m", "--mask-downsample", "16"],
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


def test_localisation_takes_its_ground_truth_from_a_config_file(tmp_path, capsys) -> None:
    from acmil.analysis.localisation import LocalisationConfig, build_parser, main

    (tmp_path / "c.yaml").write_text("checkpoint: m.ckpt\nfeatures: f\nout: o\nmasks: masks\n")
    config = config_from(build_parser().parse_args(["--config", str(tmp_path / "c.yaml")]), LocalisationConfig)
    assert (config.masks, config.annotations) == ("masks", None)
    with pytest.raises(SystemExit) as exc:  # neither on the command line nor in a file: refused before any work
        main(["--checkpoint", "m.ckpt", "--features", "f", "--out", "o"])
    assert exc.value.code == 2 and "one of the arguments --masks --annotations is required" in capsys.readouterr().err


def test_a_repeatable_option_may_be_one_value_in_a_config_file(tmp_path) -> None:
    from acmil.training.predict import PredictConfig, build_parser

    (tmp_path / "c.yaml").write_text("checkpoint: a.ckpt\nfeatures: f\nout: p.csv\n")
    alone = config_from(build_parser().parse_args(["--config", str(tmp_path / "c.yaml")]), PredictConfig)
    assert alone.checkpoint == ["a.ckpt"]  # one model, not the characters of its name
    more = config_from(
        build_parser().parse_args(["--config", str(tmp_path / "c.yaml"), "--checkpoint", "b.ckpt"]), PredictConfig
    )
    assert more.checkpoint == ["a.ckpt", "b.ckpt"]  # the command line adds to the file, as repeated flags do
