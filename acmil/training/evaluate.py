"""``acmil test``: evaluate a checkpoint on labelled feature files (imported only when the command runs).

``run_test(TestConfig) -> TestResult``; ``acmil.training.cli.test_main`` parses and prints. A run's
``config.yaml`` given as ``--config`` contributes its data group and seed (what reproduces the run's split);
its model and trainer groups are left out (the checkpoint defines the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile

from acmil.atomic import write_csv, write_json
from acmil.checkpoint import load_model
from acmil.command import command_parser
from acmil.evaluation import summarise

from .data import BagDataset, FeatureDataModule
from .metrics import metric_values, predict_dataset
from .results import Predictions, TestResult

SPLITS = ("auto", "train", "val", "test", "all")
RUN_GROUPS = ("model", "trainer", "checkpoint", "optimizer", "lr_scheduler", "ckpt_path")


@dataclass(kw_only=True)
class TestConfig:
    """``acmil test``'s options (``data``: :class:`FeatureDataModule` arguments, ``class_names`` excluded)."""

    __test__ = False  # not a pytest test class

    checkpoint: Path
    out: Path
    data: dict[str, Any] = field(default_factory=dict)
    split: str = "auto"
    device: str = "cpu"
    run_config: Path | None = None  # a run's config.yaml: its split is the one evaluated under split "auto"


class _ConfigOrRunConfig(ActionConfigFile):
    """``--config``: option values, or a run's ``config.yaml``, of which the data group and the seed are read."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: str | None = None) -> None:
        path = Path(str(values))
        loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
        if isinstance(loaded, dict) and any(group in loaded for group in RUN_GROUPS):
            data = {k: v for k, v in (loaded.get("data") or {}).items() if k != "class_names"}
            if data.get("seed") is None and isinstance(loaded.get("seed_everything"), int):
                data["seed"] = loaded["seed_everything"]  # as acmil train does: one seed for the split too
            super().__call__(parser, cfg, yaml.safe_dump({"data": data}), option_string)
            cfg["run_config"] = str(path)
            return
        super().__call__(parser, cfg, values, option_string)


def test_parser() -> Any:
    parser = command_parser(
        "acmil test",
        "Evaluate a checkpoint on labelled feature files.",
        config_action=_ConfigOrRunConfig,
        config_help="option values as YAML, or a run's config.yaml (its data paths and split seed)",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a best.ckpt (or imported checkpoint)")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json and predictions.csv")
    parser.add_argument(
        "--split",
        default="auto",
        choices=list(SPLITS),
        help="auto: 'test' when the split is known (a split column, --data.splits_file, or a run's "
        "--config, whose seed reproduces the run's split), else every labelled slide",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--run_config", type=Path | None, default=None, help="a run's config.yaml (as --config)")
    parser.add_class_arguments(FeatureDataModule, "data", skip={"class_names"})
    return parser


def run_test(config: TestConfig) -> TestResult:
    """Evaluate ``config.checkpoint`` on ``config.split``; write ``metrics.json`` and ``predictions.csv``."""
    loaded = load_model(config.checkpoint)
    data = {k: v for k, v in dict(config.data).items() if v is not None and k != "class_names"}
    dm = FeatureDataModule(**data, class_names=loaded.card.class_names)
    dm.evaluation_only = True
    cohort = dm.cohort
    if cohort.in_dim != loaded.card.in_dim:
        raise ValueError(
            f"{config.checkpoint}: model expects {loaded.card.in_dim}-d features, "
            f"{dm.features_dir} holds {cohort.in_dim}-d features"
        )
    split = config.split
    if split == "auto":
        split = "test" if (cohort.has_split_column or dm.splits_file or config.run_config) else "all"
    indices = list(range(len(cohort.rows))) if split == "all" else dm.splits[split]
    model = loaded.model.to(config.device)
    names = loaded.card.class_names
    probs, targets, idx = predict_dataset(model, BagDataset(cohort, indices), config.device)
    groups = [cohort.groups[i] for i in idx]
    metrics = {split: metric_values(probs, targets, len(names))}
    metrics[split].update(summarise(probs, targets, names, groups, temperature=loaded.temperature))
    predictions = Predictions(
        names, [cohort.slide_ids[i] for i in idx], [split] * len(idx), [names[t] for t in targets], groups, probs
    )
    out = Path(config.out)
    paths = {"predictions": out / "predictions.csv", "metrics": out / "metrics.json"}
    write_csv(paths["predictions"], predictions.rows(), predictions.fields)
    write_json(paths["metrics"], metrics)
    return TestResult(out=out, split=split, metrics=metrics, predictions=predictions, paths=paths)
