"""Every file in configs/ parses, alone and composed the way the README shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from acmil.training.cli import train_main

# Training configs: everything in configs/ except the preprocessing defaults (tested with preprocess).
CONFIGS = sorted(
    str(p.relative_to(Path(__file__).resolve().parents[2]))
    for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml")
    if not p.name.startswith("preprocess")
)


def _resolved(capsys: pytest.CaptureFixture, *configs: str) -> dict:
    args = [a for c in configs for a in ("--config", c)]
    with pytest.raises(SystemExit) as info:
        train_main([*args, "--print_config"])
    assert info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_there_are_configs() -> None:
    assert {
        "configs/acmil.yaml",
        "configs/abmil.yaml",
        "configs/features/resnet18.yaml",
        "configs/features/vit_s.yaml",
        "configs/trainer/cpu.yaml",
        "configs/trainer/gpu.yaml",
    } <= set(CONFIGS)


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses(config: str, capsys: pytest.CaptureFixture) -> None:
    cfg = _resolved(capsys, config)
    assert {"model", "data", "trainer", "seed_everything"} <= set(cfg)


def test_configs_compose(capsys: pytest.CaptureFixture) -> None:
    cfg = _resolved(capsys, "configs/acmil.yaml", "configs/features/vit_s.yaml", "configs/trainer/gpu.yaml")
    assert cfg["model"]["arch"] == "acmil" and cfg["model"]["arch_args"]["n_branches"] == 5
    assert cfg["model"]["hidden_dim"] == 128 and cfg["model"]["lr"] == pytest.approx(1e-4)
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    assert _resolved(capsys, "configs/abmil.yaml", "configs/features/resnet18.yaml")["model"]["hidden_dim"] == 256
