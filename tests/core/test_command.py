"""acmil/command.py: the shared parser (config file, --print_config, short errors) and keyword configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from acmil.command import command_parser, config_from


@dataclasses.dataclass(kw_only=True)
class _Config:
    run_a: Path
    n_boot: int = 1000
    seed: int = 0


def _parser():
    p = command_parser("acmil probe", "A probe command.")
    p.add_argument("run_a", type=Path)
    p.add_argument("--n-boot", type=int, default=1000)
    return p


def test_config_by_keyword_from_flags_and_file(tmp_path):
    assert config_from(_parser().parse_args(["a", "--n-boot", "3"]), _Config) == _Config(run_a=Path("a"), n_boot=3)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("n_boot: 7\nrun_a: b\n")
    assert config_from(_parser().parse_args(["--config", str(cfg_file)]), _Config).n_boot == 7
    # the command line wins over the file given before it
    assert config_from(_parser().parse_args(["--config", str(cfg_file), "--n-boot", "9"]), _Config).n_boot == 9
    assert config_from(_parser().parse_args(["a"]), _Config, seed=5).seed == 5


def test_print_config_round_trips(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["a", "--n-boot", "4", "--print_config"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "n_boot: 4" in printed
    (tmp_path / "p.yaml").write_text(printed)
    assert config_from(_parser().parse_args(["--config", str(tmp_path / "p.yaml")]), _Config).n_boot == 4


def test_mistyped_option_is_one_short_error_with_a_hint(capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["a", "--n-bot", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "did you mean --n-boot?" in err and len(err.splitlines()) <= 4


def test_a_bad_key_in_a_config_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_bot: 3\n")
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["--config", str(bad), "a"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "n_bot" in err and str(bad) in err
