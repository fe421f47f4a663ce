"""``acmil train`` (LightningCLI) and ``acmil test``.

``acmil train --config configs/acmil.yaml --data.features_dir DIR --data.labels_csv FILE --trainer.max_epochs N
--trainer.default_root_dir RUN --seed_everything S`` fits the model, keeps the checkpoint with the best
validation macro-F1 + macro-AUC as ``RUN/checkpoints/best.ckpt``, evaluates it on the validation and test
splits, and writes ``RUN/metrics.json``, ``RUN/predictions.csv``, ``RUN/splits.json`` and ``RUN/config.yaml``
next to the CSV and TensorBoard logs in ``RUN/logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from acmil.atomic import write_csv, write_json
from acmil.checkpoint import load_model
from acmil.evaluation import summarise

from .data import FeatureDataModule
from .metrics import metric_values, predict_dataset, prediction_rows
from .module import SELECTION_METRIC, MILModule

DEFAULT_RUN_DIR = "runs/train"
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": 1,  # DDP is opt-in: --trainer.devices 2 --trainer.strategy ddp
    "max_epochs": 100,
    "log_every_n_steps": 10,
    "default_root_dir": DEFAULT_RUN_DIR,
}


class _SaveConfigToRunDir(SaveConfigCallback):
    """Save the resolved config as ``RUN/config.yaml`` (``--config RUN/config.yaml`` replays the run)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        self.already_saved = True


class ACMILCLI(LightningCLI):
    """LightningCLI for :class:`MILModule` + :class:`FeatureDataModule`, with the run directory laid out."""

    def __init__(self, args: list[str] | None = None, prog: str = "acmil train") -> None:
        super().__init__(
            MILModule,
            FeatureDataModule,
            save_config_callback=_SaveConfigToRunDir,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={"prog": prog, "description": __doc__.split("\n\n")[0]},
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

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = Path(config.get("default_root_dir") or DEFAULT_RUN_DIR)
        config["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            config["logger"] = [
                TensorBoardLogger(root, name="logs", version="tensorboard", default_hp_metric=False),
                CSVLogger(root, name="logs", version="csv"),
            ]
        callbacks = list(callbacks) + [
            ModelCheckpoint(
                dirpath=root / "checkpoints", filename="best", monitor=SELECTION_METRIC, mode="max",
                save_top_k=1, save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
            ),
        ]
        if config.get("logger"):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
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


def run_training(argv: list[str] | None) -> dict[str, Any] | None:
    """Fit, select, evaluate and write the run directory. Returns val/test metrics on rank 0, else None."""
    with warnings.catch_warnings():
        # ``acmil train`` passes its own argv on purpose; Lightning warns when sys.argv differs.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = ACMILCLI(argv)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    run_dir = Path(trainer.default_root_dir)
    if trainer.is_global_zero:
        dm.write_splits(run_dir / "splits.json")
    trainer.fit(model, datamodule=dm)
    if not trainer.is_global_zero:
        return None
    best = Path(trainer.checkpoint_callback.best_model_path or "")
    target = run_dir / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise RuntimeError(f"{run_dir}: no checkpoint was saved (did validation run? see {SELECTION_METRIC})")
    if best.resolve() != target.resolve():
        shutil.copyfile(best, target)
    device = trainer.strategy.root_device
    return evaluate_run(target, dm, run_dir, device if device.type != "mps" else "cpu")


def train_main(argv: list[str] | None = None) -> int:
    metrics = run_training(argv)
    if metrics is not None:
        print(json.dumps(metrics, indent=2))
    return 0


def _test_parser() -> Any:
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="acmil test", description="Evaluate a checkpoint on labelled feature files.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--checkpoint", required=True, help="a best.ckpt (or imported checkpoint)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and predictions.csv")
    parser.add_argument("--split", default="auto", choices=["auto", "train", "val", "test", "all"],
                        help="auto: 'test' when the split is known (a split column, --data.splits_file, or a run's "
                             "--config, whose seed reproduces the run's split), else every labelled slide")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_class_arguments(FeatureDataModule, "data")
    # A run's saved config.yaml also holds these groups; they are accepted and ignored (the checkpoint
    # defines the model).
    for group in ("model", "trainer", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{group}", type=dict | None, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed_everything", type=bool | int | None, default=None, help=argparse.SUPPRESS)
    return parser


def test_main(argv: list[str] | None = None) -> int:
    """``acmil test --checkpoint CKPT --data.features_dir DIR --data.labels_csv FILE --out DIR``."""
    cfg = _test_parser().parse_args(argv)
    loaded = load_model(cfg.checkpoint)
    data = {k: v for k, v in vars(cfg.data).items() if v is not None and k != "class_names"}
    dm = FeatureDataModule(**data, class_names=loaded.card.class_names)
    dm.evaluation_only = True
    cohort = dm.cohort
    if cohort.in_dim != loaded.card.in_dim:
        raise ValueError(f"{cfg.checkpoint}: model expects {loaded.card.in_dim}-d features, "
                         f"{dm.features_dir} holds {cohort.in_dim}-d features")
    split = cfg.split
    if split == "auto":
        split = "test" if (cohort.has_split_column or dm.splits_file or cfg.config) else "all"
    indices = list(range(len(cohort.rows))) if split == "all" else dm.splits[split]
    from .data import BagDataset

    model = loaded.model.to(cfg.device)
    names = loaded.card.class_names
    probs, targets, idx = predict_dataset(model, BagDataset(cohort, indices), cfg.device)
    metrics = {split: metric_values(probs, targets, len(names))}
    groups = cohort.groups
    metrics[split].update(summarise(probs, targets, names, [groups[i] for i in idx], temperature=loaded.temperature))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = prediction_rows([cohort.slide_ids[i] for i in idx], probs, names, [names[t] for t in targets], split)
    write_csv(out / "predictions.csv", rows, ["slide_id", "split", "label", "predicted"] + [f"prob_{c}" for c in names])
    write_json(out / "metrics.json", metrics)
    print(json.dumps(metrics, indent=2))
    return 0
