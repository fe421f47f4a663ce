"""``acmil calibrate RUN_DIR|CV_DIR``: fit temperature scaling on a run's validation slides and record it in
the checkpoint's model card (``card.extra["temperature"]``), which ``acmil predict`` and the service apply.

The validation logits are recomputed from the feature files (exact, unlike the rounded probabilities of
predictions.csv); the slide list comes from ``RUN/splits.json`` and the data paths from ``RUN/config.yaml``
unless given. ``RUN/calibration.json`` records T and the validation NLL, ECE and Brier before and after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.atomic import save_torch, write_json
from acmil.command import CommandParser, command_parser, config_from

from .calibration import calibration_summary, fit_temperature
from .io import fold_dirs, run_data_paths


def split_logits(
    checkpoint: Path, features_dir: Path, labels_csv: Path, slide_ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Slide logits (n, C) and targets (n,) of ``slide_ids`` under the checkpoint's label map."""
    import torch

    from acmil.checkpoint import load_model
    from acmil.features import list_feature_files, read_features
    from acmil.training.cohort import read_labels

    loaded = load_model(checkpoint)
    names = loaded.card.class_names
    rows, problems = read_labels(labels_csv)
    if problems:
        raise ValueError("; ".join(problems))
    label_of = {r.slide_id: r.label for r in rows}
    files = list_feature_files(features_dir)
    missing = [s for s in slide_ids if s not in files or label_of.get(s) not in names]
    if missing:
        raise ValueError(
            f"{len(missing)} slide(s) without a feature file in {features_dir} or a known label in "
            f"{labels_csv}: {', '.join(missing[:10])}"
        )
    logits = []
    with torch.inference_mode():
        for sid in slide_ids:
            feats = torch.as_tensor(read_features(files[sid]).features, dtype=torch.float32)[None]  # (1, N, D)
            logits.append(loaded.model(feats).logits.float()[0].numpy())
    return np.stack(logits).astype(np.float64), np.array([names.index(label_of[s]) for s in slide_ids])


def write_temperature(checkpoint: Path, temperature: float, out: Path | None = None) -> Path:
    """Store ``temperature`` in the checkpoint's card (atomically, in place unless ``out``)."""
    from acmil.checkpoint import read_checkpoint

    payload = read_checkpoint(checkpoint)  # weights_only: never unpickle code from a checkpoint
    card = payload.get("acmil")
    if card is None:
        raise ValueError(f"{checkpoint}: not an acmil checkpoint (no 'acmil' card)")
    card.setdefault("extra", {})["temperature"] = float(temperature)
    target = Path(out or checkpoint)
    save_torch(target, payload)
    return target


def calibrate_run(
    run_dir: Path,
    split: str = "val",
    checkpoint: Path | None = None,
    features_dir: Path | None = None,
    labels_csv: Path | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Fit T on ``split`` of one run, write it into the card and ``RUN/calibration.json``; returns that record."""
    checkpoint = Path(checkpoint or run_dir / "checkpoints" / "best.ckpt")
    features_dir, labels_csv = run_data_paths(run_dir, features_dir, labels_csv)
    splits_path = run_dir / "splits.json"
    if not splits_path.is_file():
        raise FileNotFoundError(f"{splits_path}: no splits.json (is {run_dir} an `acmil train` run?)")
    slide_ids = json.loads(splits_path.read_text()).get(split) or []
    if len(slide_ids) < 2:
        raise ValueError(
            f"{splits_path}: the {split!r} split has {len(slide_ids)} slide(s); temperature scaling "
            "needs a validation set"
        )
    logits, targets = split_logits(checkpoint, features_dir, labels_csv, slide_ids)
    temperature = fit_temperature(logits, targets)

    def probs(t: float) -> np.ndarray:
        z = logits / t
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    keys = ("ece", "brier", "nll")
    before, after = calibration_summary(probs(1.0), targets), calibration_summary(probs(temperature), targets)
    written = write_temperature(checkpoint, temperature, out)
    record = {
        "temperature": temperature,
        "split": split,
        "n_slides": len(slide_ids),
        "checkpoint": str(written),
        "before": {k: before[k] for k in keys},
        "after": {k: after[k] for k in keys},
    }
    write_json(run_dir / "calibration.json", record)
    return record


@dataclass(kw_only=True)
class CalibrateConfig:
    """``acmil calibrate``'s options (a config file's keys are these names)."""

    run: str  # an `acmil train` run directory, or an `acmil cv` directory (every fold)
    split: str = "val"
    checkpoint: str | None = None  # default RUN/checkpoints/best.ckpt
    features: str | None = None  # default data.features_dir of RUN/config.yaml
    labels_csv: str | None = None  # default data.labels_csv of RUN/config.yaml
    out: str | None = None  # the calibrated checkpoint (default: in place)


@dataclass(kw_only=True)
class CalibrateResult:
    """What ``acmil calibrate`` fitted and wrote.

    Attributes:
        records: per run directory (each fold of a cv directory), its ``calibration.json``: ``temperature``,
            ``split``, ``n_slides``, ``checkpoint`` and the NLL / ECE / Brier ``before`` and ``after``.
        paths: the files written: each calibrated checkpoint and its run's calibration.json.
    """

    records: dict[str, dict[str, Any]]
    paths: list[Path] = field(default_factory=list)


def run_calibrate(config: CalibrateConfig) -> CalibrateResult:
    """Fit T on every run of ``config.run`` (one run, or each fold of a cv directory)."""
    root = Path(config.run)
    runs = fold_dirs(root) or [root]
    if len(runs) > 1 and (config.checkpoint or config.out):
        raise ValueError("--checkpoint and --out name one checkpoint; give a run directory, not a cv directory")

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    result = CalibrateResult(records={})
    for run in runs:
        rec = calibrate_run(
            run,
            split=config.split,
            checkpoint=path(config.checkpoint),
            features_dir=path(config.features),
            labels_csv=path(config.labels_csv),
            out=path(config.out),
        )
        result.records[str(run)] = rec
        result.paths += [Path(rec["checkpoint"]), run / "calibration.json"]
    return result


def build_parser() -> CommandParser:
    p = command_parser("acmil calibrate", __doc__.split("\n\n")[0])
    p.add_argument("run", help="an `acmil train` run directory, or an `acmil cv` directory (every fold)")
    p.add_argument("--split", default="val", help="split of splits.json to fit on (default val)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to calibrate (default RUN/checkpoints/best.ckpt)")
    p.add_argument("--features", default=None, help="feature folder (default: data.features_dir of RUN/config.yaml)")
    p.add_argument("--labels-csv", default=None, help="labels CSV (default: data.labels_csv of RUN/config.yaml)")
    p.add_argument("--out", default=None, help="write the calibrated checkpoint here instead of in place")
    return p


def main(argv: list[str] | None = None) -> int:
    result = run_calibrate(config_from(build_parser().parse_args(argv), CalibrateConfig))
    for run, rec in result.records.items():
        print(
            f"{run}: T = {rec['temperature']:.3f}; {rec['split']} ECE {rec['before']['ece']:.4f} -> "
            f"{rec['after']['ece']:.4f}, NLL {rec['before']['nll']:.4f} -> {rec['after']['nll']:.4f}"
        )
    return 0
