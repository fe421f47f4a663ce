"""The Lightning side of ``acmil train``: the LightningCLI, atomic checkpoints, the run directory.

A run directory ``RUN`` holds ``checkpoints/best.ckpt`` (the epoch the ``checkpoint`` group selects: by default
the best validation macro-F1 + macro-AUC; without a validation split, ``--data.val_fraction 0``, or with
``--checkpoint.monitor null``, the last epoch's: the checkpoint metrics.json evaluates either way),
``checkpoints/last.ckpt`` (the latest epoch, for ``--resume``), ``metrics.json``, ``predictions.csv``,
``splits.json``, ``config.yaml``, the CSV and TensorBoard logs in ``logs/`` and the full log ``train.log``.
Imported only when a command trains (Lightning takes seconds to import); ``acmil.training.cli`` is the
light entry point.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import ActionConfigFile
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from acmil.atomic import atomic_path, copy_file, save_torch, write_csv, write_json
from acmil.checkpoint import load_model
from acmil.command import short_error
from acmil.evaluation import summarise

from .data import FeatureDataModule
from .metrics import metric_values, predict_dataset
from .module import SELECTION_METRIC, MILModule
from .progress import RunProgress
from .quiet import note
from .results import Predictions, TrainResult
from .rundir import LAST_CHECKPOINT, RunOptions, prepare_run_dir, resolve_config

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


class NamedConfigFile(ActionConfigFile):
    """``--config``: a YAML file, or the name of a config shipped with acmil (``--config acmil`` is the installed
    ``configs/acmil.yaml``, ``--config trainer/gpu`` its ``configs/trainer/gpu.yaml``)."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: str | None = None) -> None:
        super().__call__(parser, cfg, str(resolve_config(values)), option_string)


class _Parser(LightningArgumentParser):
    """LightningCLI's parser with a short error (the message and a close option name, not 60 lines of usage)
    and ``--config NAME`` for the shipped configs."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("action") is ActionConfigFile:
            kwargs["action"] = NamedConfigFile
        return super().add_argument(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        short_error(self, message, hint=f"{self.prog} --help: the common options; --help-all: every option")


class BestCheckpoint(ModelCheckpoint):
    """``RUN/checkpoints/best.ckpt``: the epoch that ``monitor`` and ``mode`` select (the ``checkpoint`` group of
    the config). The default is the best validation macro-F1 + macro-AUC; ``checkpoint.monitor: null`` keeps
    the last epoch. Without a validation split (``--data.val_fraction 0``) there is nothing to select on: it
    follows the last epoch and validation is switched off.

    Args:
        dirpath: folder of the checkpoint; default ``RUN/checkpoints``.
        filename: file name without ``.ckpt``.
        monitor: logged metric that selects the checkpoint, or None for the last epoch.
        mode: "max" or "min" of ``monitor``.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "best",
        monitor: str | None = SELECTION_METRIC,
        mode: str = "max",
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        _use_run_dir(self, trainer)
        datamodule = trainer.datamodule
        if stage == "fit" and isinstance(datamodule, FeatureDataModule) and not datamodule.splits["val"]:
            self.monitor = None
            trainer.limit_val_batches, trainer.num_sanity_val_steps = 0, 0
        super().setup(trainer, pl_module, stage)


class LastEpochCheckpoint(ModelCheckpoint):
    """``RUN/checkpoints/last.ckpt`` after every epoch, for ``--resume``. Its own class, so its state key differs
    from a monitor-less ModelCheckpoint a config adds (Lightning refuses two callbacks with one key)."""

    def __init__(self, dirpath: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        _use_run_dir(self, trainer)
        super().setup(trainer, pl_module, stage)


def _use_run_dir(checkpoint: ModelCheckpoint, trainer: Trainer) -> None:
    """No dirpath: ``RUN/checkpoints`` (Lightning's own default would be inside the first logger's folder)."""
    if checkpoint.dirpath is None:
        checkpoint.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")


def run_loggers(root: Path) -> list[Any]:
    """The loggers of a run whose config sets no ``trainer.logger``: ``RUN/logs/tensorboard`` and ``RUN/logs/csv``."""
    return [
        TensorBoardLogger(root, name="logs", version="tensorboard", default_hp_metric=False),
        CSVLogger(root, name="logs", version="csv"),
    ]


class ACMILCLI(LightningCLI):
    """LightningCLI for :class:`MILModule` + :class:`FeatureDataModule`, with the run directory laid out.

    ``options`` are ``acmil train``'s own flags (``--overwrite``, ``--resume``, ``--verbose``), checked
    against the run directory once the config is parsed and before the cohort is read. The checkpoint that
    ``best.ckpt`` holds is the ``checkpoint`` group (:class:`BestCheckpoint`); ``trainer.logger`` and
    ``trainer.callbacks`` are the config's (unset logger: TensorBoard and CSV in ``RUN/logs``).
    ``parse_only`` stops after parsing (``self.config``), for ``acmil cv``, which adds ``extra_arguments``
    (its ``--folds`` and ``--selection``) to the same parser.
    """

    def __init__(
        self,
        args: list[str] | dict[str, Any] | None = None,
        prog: str = "acmil train",
        options: RunOptions | None = None,
        on_run_dir: Callable[[Path], None] | None = None,
        parse_only: bool = False,
        extra_arguments: Callable[[LightningArgumentParser], None] | None = None,
    ) -> None:
        self.options, self.on_run_dir = options or RunOptions(), on_run_dir
        self.parse_only, self.extra_arguments = parse_only, extra_arguments
        self.resume_from: Path | None = None
        super().__init__(
            MILModule,
            FeatureDataModule,
            save_config_callback=_SaveConfigToRunDir,
            parser_class=_Parser,
            trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [LastEpochCheckpoint()]},
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
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        if self.extra_arguments is not None:
            self.extra_arguments(parser)

    def before_instantiate_classes(self) -> None:
        if self.parse_only:
            return
        # One seed for splits, initialisation and masking unless the data group sets its own split seed.
        if self.config["data"]["seed"] is None and isinstance(self.config["seed_everything"], int):
            self.config["data"]["seed"] = self.config["seed_everything"]
        root = self.run_dir
        self.resume_from = prepare_run_dir(root, self.options, self.parser.dump(self.config, skip_none=False))
        if self.on_run_dir is not None:
            self.on_run_dir(root)

    def instantiate_classes(self) -> None:
        if not self.parse_only:
            super().instantiate_classes()

    @property
    def run_dir(self) -> Path:
        return Path(self.config["trainer"]["default_root_dir"] or DEFAULT_RUN_DIR)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer of the config, plus what a run needs and the config leaves unset: the loggers, atomic
        checkpoint writes, the learning-rate monitor (with a logger) and the progress display."""
        config, root = self.config_init["trainer"], self.run_dir
        kwargs["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            kwargs["logger"] = run_loggers(root)
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(hasattr(p, "save_checkpoint") for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
        if kwargs.get("logger", config.get("logger")):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        summary_on = config.get("enable_model_summary") in (None, True)
        if summary_on and not any(isinstance(c, ModelSummary) for c in callbacks):
            # The plain summary logs (to train.log); Lightning's default with `rich` installed prints to stdout.
            callbacks.append(ModelSummary())
        if config.get("enable_progress_bar") in (None, True) and not self.options.verbose:
            callbacks.append(RunProgress())  # Lightning's own bar under --verbose
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    @property
    def best_checkpoint_callback(self) -> BestCheckpoint:
        """The callback that selects ``best.ckpt`` (the ``checkpoint`` group), whatever else the config adds."""
        return self.config_init["checkpoint"]


def evaluate_run(
    module_path: str | os.PathLike, datamodule: FeatureDataModule, run_dir: Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, dict[str, Any]], Predictions]:
    """Evaluate a checkpoint on val and test; write ``metrics.json`` and ``predictions.csv`` in ``run_dir``."""
    loaded = load_model(module_path, map_location="cpu")  # the same path the service and ``predict`` use
    model = loaded.model.to(device)
    cohort, names = datamodule.cohort, loaded.card.class_names
    metrics, parts, groups = {}, [], cohort.groups
    for split in ("val", "test"):
        probs, targets, idx = predict_dataset(model, datamodule.dataset(split), device)
        metrics[split] = metric_values(probs, targets, len(names))
        metrics[split].update(summarise(probs, targets, names, [groups[i] for i in idx]))  # CIs, calibration
        parts.append(
            Predictions(
                names,
                [cohort.slide_ids[i] for i in idx],
                [split] * len(idx),
                [names[t] for t in targets],
                [groups[i] for i in idx],
                probs,
            )
        )
    predictions = Predictions.concat(parts)
    write_csv(run_dir / "predictions.csv", predictions.rows(), predictions.fields)
    write_json(run_dir / "metrics.json", metrics)
    return metrics, predictions


def train(
    args: list[str] | dict[str, Any],
    options: RunOptions | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
) -> TrainResult | None:
    """Fit, select, evaluate and write the run directory. Returns the run's result on rank 0, else None.

    ``args``: LightningCLI options as argv or as a config dict (``{"model": {...}, "trainer": {...}}``).
    ``on_run_dir(root)`` is called once the run directory is checked (the log file goes there).
    """
    with warnings.catch_warnings():
        # ``acmil train`` passes its own argv on purpose; Lightning warns when sys.argv differs.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = ACMILCLI(args, options=options, on_run_dir=on_run_dir)
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
    selector = cli.best_checkpoint_callback
    best = Path(selector.best_model_path or "")
    target = run_dir / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise RuntimeError(f"{run_dir}: no checkpoint was saved (did validation run? see {selector.monitor})")
    if best.resolve() != target.resolve():
        copy_file(best, target)
    device = trainer.strategy.root_device
    metrics, predictions = evaluate_run(target, dm, run_dir, device if device.type != "mps" else "cpu")
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint=target,
        last_checkpoint=run_dir / LAST_CHECKPOINT,
        metrics=metrics,
        splits=dm.splits_record(),
        predictions=predictions,
        resumed_from=cli.resume_from,
    )


def parse_config(
    args: list[str] | dict[str, Any],
    prog: str = "acmil train",
    extra_arguments: Callable[[LightningArgumentParser], None] | None = None,
) -> tuple[Any, LightningArgumentParser]:
    """The parsed config of ``args`` (and its parser), without reading the cohort or building anything."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = ACMILCLI(args, prog=prog, parse_only=True, extra_arguments=extra_arguments)
    return cli.config, cli.parser
