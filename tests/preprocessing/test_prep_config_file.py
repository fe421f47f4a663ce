"""configs/preprocess.yaml holds only options `acmil preprocess` knows, and flags still win over it."""

from __future__ import annotations

from pathlib import Path

from acmil.preprocessing.cli import parse_args

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "preprocess.yaml"


def test_shipped_preprocess_config_parses_and_flags_win(tmp_path):
    args = parse_args(
        ["--config", str(CONFIG), "--slides", str(tmp_path), "--out", str(tmp_path / "o"), "--tile-size", "224"]
    )
    assert args.encoder == "resnet50_trunc" and args.target_mpp == 0.5
    assert args.tile_size == 224  # the command line overrides the file
