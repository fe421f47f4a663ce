"""``acmil cv --folds K [acmil train options]``: K-fold cross-validation.

Folds are stratified by label and grouped by case_id. Fold k's slides are its test set. With
``--selection best`` (the default) the remaining cases are split again into train and an inner validation
set (``--data.val_fraction``) used to select the checkpoint; with ``--selection last`` every remaining case
trains and the last epoch is kept (the classical MIL benchmarks' protocol, the reference code's "last"
checkpoint), so no validation split exists. Either way ``fold_<k>/checkpoints/best.ckpt`` is the selected
checkpoint and the one evaluated in ``fold_<k>/metrics.json``. Each fold is a full ``acmil train`` run in
``RUN/fold_<k>/``; ``RUN/cv_summary.json`` holds each test metric's mean and (sample) std over the folds and
every fold's numbers, and ``RUN/oof_predictions.csv`` all folds' out-of-fold predictions.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from acmil.atomic import write_csv, write_json

from .rundir import RunOptions, split_own_flags

if TYPE_CHECKING:
    from .results import Predictions, TrainResult

DEFAULT_CV_DIR = "runs/cv"
CV_DESCRIPTION = """\
K-fold cross-validation: folds stratified by label and grouped by case_id. Each fold is a full acmil train
run in RUN/fold_<k>/ whose test set is fold k. --selection best (default): a validation set from the other
folds chooses the checkpoint; --selection last: all the other folds train and the last epoch is kept (no
validation split). fold_<k>/checkpoints/best.ckpt is the checkpoint evaluated either way. RUN/cv_summary.json
holds each test metric's mean and std over the folds and RUN/oof_predictions.csv every slide's out-of-fold
prediction.

example:
  acmil cv --folds 5 --config configs/acmil.yaml --data.features_dir features --data.labels_csv labels.csv \\
      --trainer.max_epochs 50 --trainer.default_root_dir runs/cv"""


def summarise(fold_metrics: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1) of each metric over folds."""
    import numpy as np

    from .metrics import METRIC_NAMES

    out = {}
    for name in METRIC_NAMES:
        vals = np.array([m[name] for m in fold_metrics if name in m], dtype=float)
        if vals.size:
            std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
            out[name] = {"mean": float(vals.mean()), "std": std}
    return out


SELECTIONS = ("best", "last")


@dataclass(kw_only=True)
class CVConfig:
    """``acmil cv``: ``train`` is the parsed ``acmil train`` config (a dict), which every fold runs with its own
    ``data.folds``, ``data.fold`` and ``trainer.default_root_dir`` (``RUN/fold_<k>``)."""

    train: dict[str, Any]
    folds: int = 5
    selection: str = "best"
    options: RunOptions = field(default_factory=RunOptions)

    @property
    def run_dir(self) -> Path:
        return Path((self.train.get("trainer") or {}).get("default_root_dir") or DEFAULT_CV_DIR)


@dataclass(frozen=True)
class CVResult:
    run_dir: Path
    summary: dict[str, Any]  # cv_summary.json
    folds: list[TrainResult]
    oof: Predictions  # every slide once, predicted by the fold that held it out


def check_single_process(trainer: dict[str, Any]) -> None:
    """Refuse a trainer config that starts several processes (DDP): the folds run one after another here."""
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    strategy, devices = trainer.get("strategy") or "auto", trainer.get("devices")
    if isinstance(strategy, dict):
        name = strategy.get("class_path", "")
        module, _, cls = name.rpartition(".")
        strategy_class = getattr(__import__(module, fromlist=[cls]), cls) if module else None
    else:
        strategy_class = StrategyRegistry[strategy]["strategy"] if strategy in StrategyRegistry else None
    many = isinstance(devices, list | tuple) and len(devices) > 1
    many = many or (str(devices).lstrip("-").isdigit() and (int(devices) > 1 or int(devices) == -1))
    if (strategy_class is not None and issubclass(strategy_class, DDPStrategy)) or many:
        raise ValueError(
            f"acmil cv runs its folds one after another in one process (trainer.strategy {strategy!r}, "
            f"trainer.devices {devices!r}); use DDP with acmil train"
        )


def run_cv(config: CVConfig) -> CVResult | None:
    """Train and evaluate every fold; write ``cv_summary.json`` and ``oof_predictions.csv``.

    ``selection``: "best" (validation split from the training folds) or "last" (no validation split, the
    last epoch: ``data.val_fraction`` is set to 0). Returns None on a rank other than 0.
    """
    import copy

    from acmil.evaluation import summarise as evaluation_summary

    from .cli import run_train
    from .metrics import metric_values  # torch and Lightning are imported only when cv runs
    from .results import Predictions

    if config.selection not in SELECTIONS:
        raise ValueError(f"--selection must be one of {', '.join(SELECTIONS)}, got {config.selection!r}")
    check_single_process(config.train.get("trainer") or {})
    root, results = config.run_dir, []
    for k in range(config.folds):
        fold = copy.deepcopy(config.train)
        fold["data"].update(folds=config.folds, fold=k)
        if config.selection == "last":
            fold["data"]["val_fraction"] = 0
        fold["trainer"]["default_root_dir"] = str(root / f"fold_{k}")
        result = run_train(fold, config.options)
        if result is None:  # not rank 0
            return None
        results.append(result)
    fold_records = [{"fold": k, "run_dir": str(r.run_dir), **r.metrics} for k, r in enumerate(results)]
    tests = [r.predictions.select("test") for r in results]
    oof = Predictions.concat(tests)
    summary = {
        "metrics": summarise([r["test"] for r in fold_records]),
        "folds": fold_records,
        "pooled_oof": {
            **metric_values(oof.probabilities, oof.targets, len(oof.class_names)),  # + bootstrap CIs, calibration
            **evaluation_summary(oof.probabilities, oof.targets, oof.class_names, oof.groups),
        },
        "n_folds": config.folds,
        "selection": config.selection,  # which epoch each fold's best.ckpt (the one evaluated) is
    }
    rows = [
        {"fold": k, **{f: v for f, v in row.items() if f != "split"}} for k, t in enumerate(tests) for row in t.rows()
    ]
    write_csv(root / "oof_predictions.csv", rows, ["fold"] + [f for f in oof.fields if f != "split"])
    write_json(root / "cv_summary.json", summary)
    return CVResult(run_dir=root, summary=summary, folds=results, oof=oof)


def _cv_arguments(parser: Any) -> None:
    parser.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    parser.add_argument("--selection", choices=list(SELECTIONS), default="best", help="best or last")


def _summary_parser() -> argparse.ArgumentParser:
    """``acmil cv --help`` (light: parsing is the training CLI's, with --folds and --selection added)."""
    parser = argparse.ArgumentParser(
        prog="acmil cv",
        add_help=False,
        allow_abbrev=False,
        usage="acmil cv --folds K [acmil train options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=CV_DESCRIPTION,
        epilog="Every other option is passed to each fold's `acmil train` (see acmil train --help), "
        "--overwrite included; a --config file may set folds and selection too.",
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="best",
        help="best (default): the best epoch on a validation split carved from the training folds; "
        "last: train on all the training folds, keep the last epoch",
    )
    parser.add_argument("-h", "--help", action="store_true", help="this summary")
    return parser


def cv_config(argv: list[str]) -> CVConfig:
    """Parse ``acmil cv`` options with the training CLI's parser (one parse: ``--config`` and ``--print_config``
    work, and a fold runs exactly the config parsed here)."""
    from .quiet import captured_lightning_output

    options, rest = split_own_flags(argv)
    with captured_lightning_output(options.verbose):  # Lightning's import-time and seed messages
        from .lightning_run import parse_config

        parsed, parser = parse_config(rest, prog="acmil cv", extra_arguments=_cv_arguments)
        train = yaml.safe_load(parser.dump(parsed, skip_none=False))  # None values too: monitor null is a choice
    folds, selection = train.pop("folds"), train.pop("selection")
    train.pop("config", None)
    return CVConfig(train=train, folds=folds, selection=selection, options=options)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        _summary_parser().print_help()
        return 0
    config = cv_config(argv)
    result = run_cv(config)
    if result is not None:
        print("test metrics over the folds (mean ± sample std):")
        for name, value in result.summary["metrics"].items():
            print(f"  {name:<18} {value['mean']:.3f} ± {value['std']:.3f}")
        print(f"run directory: {result.run_dir}  (cv_summary.json, oof_predictions.csv, fold_<k>/)")
    return 0
