"""``acmil test``: evaluate a checkpoint on labelled feature files (imported only when the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from acmil.atomic import write_csv, write_json
from acmil.checkpoint import load_model
from acmil.evaluation import summarise

from .data import BagDataset, FeatureDataModule
from .metrics import metric_values, predict_dataset, prediction_rows


def test_parser() -> Any:
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="acmil test", description="Evaluate a checkpoint on labelled feature files.", allow_abbrev=False
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--checkpoint", required=True, help="a best.ckpt (or imported checkpoint)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and predictions.csv")
    parser.add_argument(
        "--split",
        default="auto",
        choices=["auto", "train", "val", "test", "all"],
        help="auto: 'test' when the split is known (a split column, --data.splits_file, or a run's "
        "--config, whose seed reproduces the run's split), else every labelled slide",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_class_arguments(FeatureDataModule, "data")
    # A run's saved config.yaml also holds these groups; they are accepted and ignored (the checkpoint
    # defines the model).
    for group in ("model", "trainer", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{group}", type=dict | None, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed_everything", type=bool | int | None, default=None, help=argparse.SUPPRESS)
    return parser


def test_command(argv: list[str]) -> int:
    from .progress import metrics_table

    cfg = test_parser().parse_args(argv)
    loaded = load_model(cfg.checkpoint)
    data = {k: v for k, v in vars(cfg.data).items() if v is not None and k != "class_names"}
    dm = FeatureDataModule(**data, class_names=loaded.card.class_names)
    dm.evaluation_only = True
    cohort = dm.cohort
    if cohort.in_dim != loaded.card.in_dim:
        raise ValueError(
            f"{cfg.checkpoint}: model expects {loaded.card.in_dim}-d features, "
            f"{dm.features_dir} holds {cohort.in_dim}-d features"
        )
    split = cfg.split
    if split == "auto":
        split = "test" if (cohort.has_split_column or dm.splits_file or cfg.config) else "all"
    indices = list(range(len(cohort.rows))) if split == "all" else dm.splits[split]
    model = loaded.model.to(cfg.device)
    names = loaded.card.class_names
    probs, targets, idx = predict_dataset(model, BagDataset(cohort, indices), cfg.device)
    metrics = {split: metric_values(probs, targets, len(names))}
    groups = cohort.groups
    metrics[split].update(summarise(probs, targets, names, [groups[i] for i in idx], temperature=loaded.temperature))
    out = Path(cfg.out)
    rows = prediction_rows([cohort.slide_ids[i] for i in idx], probs, names, [names[t] for t in targets], split)
    write_csv(out / "predictions.csv", rows, ["slide_id", "split", "label", "predicted"] + [f"prob_{c}" for c in names])
    write_json(out / "metrics.json", metrics)
    print(metrics_table(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.csv'} ({len(idx)} slides)")
    return 0
