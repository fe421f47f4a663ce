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


def test_a_shipped_config_by_name(capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch) -> None:
    """``--config acmil`` is the shipped configs/acmil.yaml (from any folder: a wheel carries configs/ too)."""
    by_path = _resolved(capsys, "configs/acmil.yaml", "configs/trainer/cpu.yaml")
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert _resolved(capsys, "acmil", "trainer/cpu") == by_path
    with pytest.raises(SystemExit) as info:
        train_main(["--config", "no_such_config", "--print_config"])
    assert info.value.code == 2


def test_configs_are_package_data() -> None:
    """pyproject.toml ships every file of configs/ in the wheel, as the acmil.configs package."""
    import fnmatch

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parents[2]
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "acmil.configs" in tool["packages"] and tool["package-dir"]["acmil.configs"] == "configs"
    globs = tool["package-data"]["acmil.configs"]
    files = [p.relative_to(root / "configs").as_posix() for p in (root / "configs").rglob("*.yaml")]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)
