"""configs/preprocess.yaml holds only options `acmil preprocess` knows, flags after it win, and --print_config
prints a file --config reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmil.preprocessing.cli import PreprocessConfig, parse_args, preprocess_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "preprocess.yaml"


def test_shipped_preprocess_config_parses_and_flags_win(tmp_path):
    args = parse_args(
        ["--config", str(CONFIG), "--slides", str(tmp_path), "--out", str(tmp_path / "o"), "--tile-size", "224"]
    )
    assert args.encoder == "resnet50_trunc" and args.target_mpp == 0.5
    assert args.tile_size == 224  # the command line overrides the file


def test_print_config_is_a_valid_config_file(tmp_path, capsys):
    """--print_config prints every option under its config key; fed back as --config it gives the same config."""
    argv = ["--slides", str(tmp_path), "--out", str(tmp_path / "o"), "--tile-size", "128", "--no-qc", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        parse_args([*argv, "--print_config"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "tile_size: 128" in printed and "qc: false" in printed and "progress: none" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    assert preprocess_config(["--config", str(tmp_path / "printed.yaml")]) == preprocess_config(argv)


def test_config_file_keys_with_dashes_or_underscores_and_unknown_keys(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"slides: {tmp_path}\nout: {tmp_path / 'o'}\ntile-size: 96\nmin_tissue: 0.5\n")
    config = preprocess_config(["--config", str(cfg)])
    assert (config.tile_size, config.min_tissue, config.out) == (96, 0.5, tmp_path / "o")
    assert config.extract_config().tiling.tile_size == 96
    cfg.write_text("tile_sise: 96\n")
    with pytest.raises(SystemExit) as info:
        parse_args(["--config", str(cfg), "--slides", "s", "--out", "o"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "tile_sise" in err and "Traceback" not in err


def test_slides_and_out_are_required_somewhere(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--slides", "s"])
    assert info.value.code == 2
    assert "--slides and --out are required" in capsys.readouterr().err


def test_python_config_matches_the_command_line_defaults(tmp_path):
    """PreprocessConfig built by keyword (as the demo does) equals the one the bare command line gives."""
    assert PreprocessConfig(slides=str(tmp_path), out=tmp_path / "o") == preprocess_config(
        ["--slides", str(tmp_path), "--out", str(tmp_path / "o")]
    )
