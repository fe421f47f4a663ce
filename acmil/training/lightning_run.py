"""The Lightning side of ``acmil train``: the LightningCLI, atomic checkpoints, the run directory.

A run directory ``RUN`` holds ``checkpoints/best.ckpt`` (best validation macro-F1 + macro-AUC; without a
validation split, ``--data.val_fraction 0``, the last epoch's: the checkpoint metrics.json evaluates either way),
``checkpoints/last.ckpt`` (the latest epoch, for ``--resume``), ``metrics.json``, ``predictions.csv``,
``splits.json``, ``config.yaml``, the CSV and TensorBoard logs in ``logs/`` and the full log ``train.log``.
Imported only when a command trains (Lightning takes seconds to import); ``acmil.training.cli`` is the
light entry point.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ModelSummary
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from acmil.atomic import atomic_path, copy_file, save_torch, write_csv, write_json
from acmil.checkpoint import load_model
from acmil.evaluation import summarise

from .data import FeatureDataModule
from .metrics import metric_values, predict_dataset, prediction_rows
from .module import SELECTION_METRIC, MILModule
from .progress import RunProgress
from .quiet import note
from .rundir import RunOptions, prepare_run_dir

DEFAULT_RUN_DIR = "runs/train"
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,  # DDP is opt-in: --trainer.devices 2 --trainer.strategy ddp
    "max_epochs": 100,
    "log_every_n_steps": 10,
    "default_root_dir": DEFAULT_RUN_DIR,
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written through :func:`acmil.atomic.atomic_path`: a temporary file in the checkpoint's own
    folder, fsync, rename. Lightning's default writes a temporary file elsewhere (fsspec's transaction) and
    moves it, which on another file system is a copy: a full disk then left a truncated ``best.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        save_torch(path, checkpoint)


class LastEpochCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` after every epoch, for ``--resume``. Its own class, so its state key differs
    from a monitor-less ModelCheckpoint a config adds (Lightning refuses two callbacks with one key)."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )


class _SaveConfigToRunDir(SaveConfigCallback):
    """Save the resolved config as ``RUN/config.yaml`` (``--config RUN/config.yaml`` replays the run)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            with atomic_path(path) as tmp:
                self.parser.save(self.config, str(tmp), skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True


class _Parser(LightningArgumentParser):
    """LightningCLI's parser with a short error: the message and a close option name, not 60 lines of usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        known = [opt for action in self._actions for opt in action.option_strings]
        hints = []
        for given in re.findall(r"--[\w.]+", message):
            close = difflib.get_close_matches(given, known, n=1, cutoff=0.8)
            if close and close[0] != given:
                hints.append(f"did you mean {close[0]}?")
        sys.stderr.write(
            f"{self.prog}: error: {message}\n"
            + "".join(f"  {h}\n" for h in hints)
            + f"  ({self.prog} --help: the common options; --help-all: every option)\n"
        )
        sys.exit(2)


class ACMILCLI(LightningCLI):
    """LightningCLI for :class:`MILModule` + :class:`FeatureDataModule`, with the run directory laid out.

    ``options`` are ``acmil train``'s own flags (``--overwrite``, ``--resume``, ``--verbose``), checked
    against the run directory once the config is parsed and before the cohort is read.
    """

    def __init__(
        self,
        args: list[str] | None = None,
        prog: str = "acmil train",
        options: RunOptions | None = None,
        on_run_dir: Callable[[Path], None] | None = None,
    ) -> None:
        self.options, self.on_run_dir = options or RunOptions(), on_run_dir
        self.resume_from: Path | None = None
        super().__init__(
            MILModule,
            FeatureDataModule,
            save_config_callback=_SaveConfigToRunDir,
            parser_class=_Parser,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            # allow_abbrev=False: "--trainer.max_epoch 3" is an error, not silently max_epochs
            parser_kwargs={
                "prog": prog,
                "description": "Train a MIL model (acmil train --help for a summary).",
                "allow_abbrev": False,
            },
            args=args,
            run=False,
            auto_configure_optimizers=False,  # the module builds AdamW + per-step cosine itself
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The feature width, label map and encoder come from the data, never from a table in the config.
        parser.link_arguments("data.in_dim", "model.in_dim", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.encoder", "model.encoder", apply_on="instantiate")
        parser.link_arguments("data.training_cohort", "model.training_cohort", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        # One seed for splits, initialisation and masking unless the data group sets its own split seed.
        if self.config["data"]["seed"] is None and isinstance(self.config["seed_everything"], int):
            self.config["data"]["seed"] = self.config["seed_everything"]
        root = Path(self.config["trainer"]["default_root_dir"] or DEFAULT_RUN_DIR)
        self.resume_from = prepare_run_dir(root, self.options, self.parser.dump(self.config, skip_none=False))
        if self.on_run_dir is not None:
            self.on_run_dir(root)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = Path(config.get("default_root_dir") or DEFAULT_RUN_DIR)
        config["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            config["logger"] = [
                TensorBoardLogger(root, name="logs", version="tensorboard", default_hp_metric=False),
                CSVLogger(root, name="logs", version="csv"),
            ]
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(hasattr(p, "save_checkpoint") for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        checkpoints = root / "checkpoints"
        # No validation split (val_fraction 0): nothing to select on, best.ckpt follows the last epoch.
        selects = bool(self.datamodule.splits["val"])
        if not selects:
            config["limit_val_batches"], config["num_sanity_val_steps"] = 0, 0
        callbacks = list(callbacks) + [
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="best",
                monitor=SELECTION_METRIC if selects else None,
                mode="max",
                save_top_k=1,
                save_last=False,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
            # The latest epoch, every epoch (save_last=True would only follow the best one's saves).
            LastEpochCheckpoint(checkpoints),
        ]
        if config.get("logger"):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        summary_on = config.get("enable_model_summary") in (None, True)
        if summary_on and not any(isinstance(c, ModelSummary) for c in callbacks):
            # The plain summary logs (to train.log); Lightning's default with `rich` installed prints to stdout.
            callbacks.append(ModelSummary())
        if config.get("enable_progress_bar") in (None, True) and not self.options.verbose:
            callbacks.append(RunProgress())  # Lightning's own bar under --verbose
        return super()._instantiate_trainer(config, callbacks)


def evaluate_run(
    module_path: str | os.PathLike, datamodule: FeatureDataModule, run_dir: Path, device: torch.device | str = "cpu"
) -> dict[str, dict[str, float]]:
    """Evaluate a checkpoint on val and test; write ``metrics.json`` and ``predictions.csv`` in ``run_dir``."""
    loaded = load_model(module_path, map_location="cpu")  # the same path the service and ``predict`` use
    model = loaded.model.to(device)
    cohort, names = datamodule.cohort, loaded.card.class_names
    metrics, rows, groups = {}, [], cohort.groups
    for split in ("val", "test"):
        probs, targets, idx = predict_dataset(model, datamodule.dataset(split), device)
        metrics[split] = metric_values(probs, targets, len(names))
        metrics[split].update(summarise(probs, targets, names, [groups[i] for i in idx]))  # CIs, calibration
        rows += prediction_rows(
            [cohort.slide_ids[i] for i in idx], probs, names, [names[t] for t in targets], split=split
        )
    fields = ["slide_id", "split", "label", "predicted"] + [f"prob_{c}" for c in names]
    write_csv(run_dir / "predictions.csv", rows, fields)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def fit_and_evaluate(
    argv: list[str], options: RunOptions, on_run_dir: Callable[[Path], None] | None = None
) -> dict[str, Any] | None:
    """Fit, select, evaluate and write the run directory. Returns val/test metrics on rank 0, else None.

    ``on_run_dir(root)`` is called once the run directory is checked (the log file goes there).
    """
    with warnings.catch_warnings():
        # ``acmil train`` passes its own argv on purpose; Lightning warns when sys.argv differs.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = ACMILCLI(argv, options=options, on_run_dir=on_run_dir)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    run_dir = Path(trainer.default_root_dir)
    if trainer.is_global_zero:
        dm.write_splits(run_dir / "splits.json")
    if cli.resume_from is not None and trainer.is_global_zero:
        note(f"acmil train: resuming {run_dir} from {cli.resume_from}")
    elif trainer.is_global_zero:
        note(f"acmil train: training into {run_dir} (full log: {run_dir / 'train.log'})")
    trainer.fit(model, datamodule=dm, ckpt_path=cli.resume_from)
    if not trainer.is_global_zero:
        return None
    best = Path(trainer.checkpoint_callback.best_model_path or "")
    target = run_dir / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise RuntimeError(f"{run_dir}: no checkpoint was saved (did validation run? see {SELECTION_METRIC})")
    if best.resolve() != target.resolve():
        copy_file(best, target)
    device = trainer.strategy.root_device
    return evaluate_run(target, dm, run_dir, device if device.type != "mps" else "cpu")
