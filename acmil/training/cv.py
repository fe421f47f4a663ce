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
import csv
import sys
from pathlib import Path
from typing import Any

import yaml

from acmil.atomic import write_csv, write_json

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


def _flag_value(argv: list[str], flag: str) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
    return values


def run_dir_of(argv: list[str]) -> Path:
    """RUN from --trainer.default_root_dir, else from the --config files (last wins), else runs/cv."""
    flags = _flag_value(argv, "--trainer.default_root_dir")
    if flags:
        return Path(flags[-1])
    found = None
    for cfg in _flag_value(argv, "--config"):
        try:
            data = yaml.safe_load(Path(cfg).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # the train parser reports unreadable configs itself
        found = (data.get("trainer") or {}).get("default_root_dir") or found
    return Path(found or DEFAULT_CV_DIR)


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


def run_cv(folds: int, train_argv: list[str], selection: str = "best") -> dict[str, Any]:
    """Train and evaluate every fold; write ``cv_summary.json`` and ``oof_predictions.csv``.

    ``selection``: "best" (validation split from the training folds) or "last" (no validation split, the
    last epoch; ``--data.val_fraction 0`` is appended, so it overrides one given in ``train_argv``).
    """
    import numpy as np

    from acmil.evaluation import summarise as evaluation_summary
    from acmil.evaluation.io import run_case_ids

    from .cli import run_training
    from .metrics import metric_values  # torch and Lightning are imported only when cv runs

    if selection not in SELECTIONS:
        raise ValueError(f"--selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if any("ddp" in a for a in train_argv):
        raise ValueError("acmil cv runs its folds one after another in one process; use DDP with acmil train")
    root = run_dir_of(train_argv)
    fold_records, oof_rows, fields = [], [], None
    for k in range(folds):
        fold_dir = root / f"fold_{k}"
        fold_args = ["--data.folds", str(folds), "--data.fold", str(k), "--trainer.default_root_dir", str(fold_dir)]
        if selection == "last":
            fold_args += ["--data.val_fraction", "0"]
        metrics = run_training(train_argv + fold_args)
        if metrics is None:  # not rank 0
            return {}
        fold_records.append({"fold": k, "run_dir": str(fold_dir), **metrics})
        with (fold_dir / "predictions.csv").open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields = ["fold"] + [f for f in (reader.fieldnames or []) if f != "split"]
            oof_rows += [{"fold": k, **row} for row in reader if row.get("split") == "test"]
    class_cols = [f for f in (fields or []) if f.startswith("prob_")]
    names = [c[len("prob_") :] for c in class_cols]
    probs = np.array([[float(r[c]) for c in class_cols] for r in oof_rows], dtype=np.float32)
    targets = np.array([names.index(r["label"]) for r in oof_rows], dtype=int)
    cases = run_case_ids(root, [r["slide_id"] for r in oof_rows])
    summary = {
        "metrics": summarise([r["test"] for r in fold_records]),
        "folds": fold_records,
        "pooled_oof": {
            **metric_values(probs, targets, len(names)),  # + bootstrap CIs and calibration
            **evaluation_summary(probs, targets, names, cases),
        },
        "n_folds": folds,
        "selection": selection,  # which epoch each fold's best.ckpt (the one evaluated) is
    }
    write_csv(root / "oof_predictions.csv", oof_rows, fields)
    write_json(root / "cv_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="acmil cv",
        add_help=False,
        allow_abbrev=False,
        usage="acmil cv --folds K [acmil train options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=CV_DESCRIPTION,
        epilog="Every other option is passed to each fold's `acmil train` (see acmil train --help), "
        "--overwrite included.",
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
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.help:
        parser.print_help()
        return 0
    summary = run_cv(args.folds, rest, args.selection)
    if summary:
        print("test metrics over the folds (mean ± sample std):")
        for name, value in summary["metrics"].items():
            print(f"  {name:<18} {value['mean']:.3f} ± {value['std']:.3f}")
        print(f"run directory: {run_dir_of(rest)}  (cv_summary.json, oof_predictions.csv, fold_<k>/)")
    return 0
