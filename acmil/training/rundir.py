"""A training run's directory: refuse to mix two runs in one folder, clear it on ``--overwrite``, find the
checkpoint ``--resume`` continues from. Light (no torch): ``acmil train --help`` imports it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# What a run writes into its directory (``--overwrite`` removes these, and only these).
RUN_ARTEFACTS = ("checkpoints", "logs", "metrics.json", "predictions.csv", "splits.json", "config.yaml", "train.log")
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
LOG_NAME = "train.log"
OWN_FLAGS = {"--overwrite": "overwrite", "--resume": "resume", "--verbose": "verbose"}


def resolve_config(value: str | os.PathLike) -> str | os.PathLike:
    """``--config NAME``: a file as given, else a config shipped with acmil (``acmil`` -> ``configs/acmil.yaml``,
    ``trainer/gpu`` -> ``configs/trainer/gpu.yaml``); anything else (a YAML string) unchanged."""
    text = os.fspath(value)
    if Path(text).is_file() or "\n" in text or text.lstrip().startswith(("{", "[")):
        return value
    name = text.removeprefix("configs/")
    for candidate in (name, f"{name}.yaml"):
        shipped = configs_dir() / candidate
        if shipped.is_file():
            return str(shipped)
    return value


def configs_dir() -> Path:
    """The shipped ``configs/`` folder: package data of an installed wheel, else the source checkout's."""
    from importlib.util import find_spec

    spec = find_spec("acmil.configs")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "configs"


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped config as a dict (``shipped_config("acmil")``)."""
    path = Path(resolve_config(name))
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such config in {configs_dir()}")
    return yaml.safe_load(path.read_text()) or {}


class RunDirError(ValueError):
    """The run directory cannot be used as asked (it holds another run, or nothing to resume)."""


@dataclass(frozen=True)
class RunOptions:
    """``acmil train``'s own flags, next to the LightningCLI options."""

    overwrite: bool = False
    resume: bool = False
    verbose: bool = False


def split_own_flags(argv: list[str]) -> tuple[RunOptions, list[str]]:
    """Take ``--overwrite``, ``--resume`` and ``--verbose`` out of argv; the rest is for LightningCLI."""
    found = {name: False for name in OWN_FLAGS.values()}
    rest = []
    for arg in argv:
        if arg in OWN_FLAGS:
            found[OWN_FLAGS[arg]] = True
        else:
            rest.append(arg)
    options = RunOptions(**found)
    if options.overwrite and options.resume:
        raise RunDirError("--overwrite starts the run again and --resume continues it: give one of them")
    return options, rest


def _held(root: Path) -> list[str]:
    """What ``root`` holds, less a lone log: a run refused for bad input leaves only its train.log."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name != LOG_NAME)


def _is_launched_worker() -> bool:
    """A DDP process started by Lightning for rank > 0: rank 0 already checked (and cleared) the folder."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _changed_settings(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys of the ``model`` and ``data`` groups (and the seed) that differ between two configs."""
    changed = []
    for group in ("model", "data"):
        old, cur = saved.get(group) or {}, new.get(group) or {}
        changed += [f"{group}.{k}" for k in sorted(set(old) | set(cur)) if old.get(k) != cur.get(k)]
    if saved.get("seed_everything") != new.get("seed_everything"):
        changed.append("seed_everything")
    return changed


def prepare_run_dir(root: Path, options: RunOptions, config_yaml: str | None = None) -> Path | None:
    """Check ``root`` against the flags; returns the checkpoint to resume from, or None to start afresh.

    A folder holding anything is refused unless ``--overwrite`` (its run artefacts are removed, other files
    kept) or ``--resume`` (it must hold ``checkpoints/last.ckpt``, and the same model and data settings as
    its ``config.yaml``).
    """
    last = root / LAST_CHECKPOINT
    if options.resume:
        if last.is_file():
            saved_path = root / "config.yaml"
            if config_yaml is not None and saved_path.is_file():
                changed = _changed_settings(
                    yaml.safe_load(saved_path.read_text()) or {}, yaml.safe_load(config_yaml) or {}
                )
                if changed:
                    raise RunDirError(
                        f"{root}: cannot resume with other settings than the run's config.yaml "
                        f"({', '.join(changed[:8])} differ); resume with --config {saved_path}"
                    )
            for leftover in (root / "checkpoints").glob(".*.partial"):  # from a kill during a save
                leftover.unlink(missing_ok=True)
            return last
        if _held(root):
            raise RunDirError(
                f"{root}: nothing to resume ({last} does not exist: the run was stopped before its "
                "first epoch ended); start it again with --overwrite"
            )
        return None
    held = _held(root)
    if _is_launched_worker() or not held:
        return None
    if not options.overwrite:
        raise RunDirError(
            f"{root} is not empty (holds {', '.join(held[:6])}{' ...' if len(held) > 6 else ''}): "
            f"add --resume to continue its run from {LAST_CHECKPOINT}, --overwrite to replace it, "
            "or choose another --trainer.default_root_dir"
        )
    for name in RUN_ARTEFACTS:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return None
