"""Reading what runs leave behind: predictions.csv (``acmil train``/``test``), oof_predictions.csv
(``acmil cv``), their config.yaml for the data paths, and case ids from the labels CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


@dataclass
class PredictionSet:
    """One model's predictions on labelled slides.

    Attributes:
        probs: (n, C) probabilities; targets: (n,) class indices into ``class_names``.
        case_ids: (n,) patient per slide when the labels CSV gives them, else None.
    """

    source: Path
    split: str
    slide_ids: list[str]
    targets: np.ndarray
    probs: np.ndarray
    class_names: list[str]
    case_ids: list[str] | None = None

    def subset(self, slide_ids: list[str]) -> PredictionSet:
        """The same predictions restricted to, and ordered as, ``slide_ids``."""
        where = {s: i for i, s in enumerate(self.slide_ids)}
        idx = np.array([where[s] for s in slide_ids], dtype=int)
        cases = None if self.case_ids is None else [self.case_ids[i] for i in idx]
        return PredictionSet(
            self.source, self.split, list(slide_ids), self.targets[idx], self.probs[idx], self.class_names, cases
        )


def fold_dirs(root: Path) -> list[Path]:
    """The ``fold_<k>`` runs of an ``acmil cv`` directory, in fold order ([] for a plain run)."""
    folds = [p for p in root.glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(folds, key=lambda p: int(p.name[5:]))


def _config_data(run_dir: Path) -> dict:
    for candidate in [run_dir, *fold_dirs(run_dir)]:
        path = candidate / "config.yaml"
        if path.is_file():
            try:
                return (yaml.safe_load(path.read_text()) or {}).get("data") or {}
            except yaml.YAMLError as err:
                raise ValueError(f"{path}: not a readable config ({err})") from err
    return {}


def run_data_paths(run_dir: Path, features_dir: Path | None, labels_csv: Path | None) -> tuple[Path, Path]:
    """Feature folder and labels CSV: the given ones, else ``data.*`` of the run's config.yaml."""
    data = _config_data(run_dir)
    features = features_dir or (data.get("features_dir") and Path(data["features_dir"]))
    labels = labels_csv or (data.get("labels_csv") and Path(data["labels_csv"]))
    if not features or not labels:
        raise ValueError(f"{run_dir}: give --features and --labels-csv (no data paths in {run_dir / 'config.yaml'})")
    return Path(features), Path(labels)


def case_ids_from(labels_csv: Path | None) -> dict[str, str]:
    """slide_id -> case_id from a labels CSV ({} when it has no case_id column or is unreadable)."""
    if labels_csv is None or not Path(labels_csv).is_file():
        return {}
    with Path(labels_csv).open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return {
        r["slide_id"].strip(): r["case_id"].strip()
        for r in rows
        if (r.get("case_id") or "").strip() and (r.get("slide_id") or "").strip()
    }


def predictions_file(path: Path) -> Path:
    """The CSV of a run (predictions.csv), a cv directory (oof_predictions.csv) or the file itself."""
    if path.is_file():
        return path
    for name in ("oof_predictions.csv", "predictions.csv"):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: neither predictions.csv (a run) nor oof_predictions.csv (a cv directory)")


def load_predictions(path: str | Path, split: str = "test", labels_csv: str | Path | None = None) -> PredictionSet:
    """Labelled predictions of a run, cv directory or CSV; a cv directory's out-of-fold rows are all test.

    Case ids come from ``labels_csv``, else from the labels CSV named in the run's config.yaml.
    """
    path = Path(path)
    csv_path = predictions_file(path)
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = list(reader)
    prob_cols = [f for f in fields if f.startswith("prob_")]
    if "slide_id" not in fields or "label" not in fields or not prob_cols:
        raise ValueError(f"{csv_path}: needs slide_id, label and prob_<class> columns (found {fields})")
    if "split" in fields and split != "all":
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise ValueError(f"{csv_path}: no rows of split {split!r}")
    names = [c[len("prob_") :] for c in prob_cols]
    unknown = sorted({r["label"] for r in rows} - set(names))
    if unknown:
        raise ValueError(f"{csv_path}: label(s) {unknown} are not among the classes {names} (unlabelled slides?)")
    try:
        probs = np.array([[float(r[c]) for c in prob_cols] for r in rows], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{csv_path}: a probability is not a number ({err})") from err
    slide_ids = [r["slide_id"] for r in rows]
    if len(set(slide_ids)) != len(slide_ids):
        raise ValueError(f"{csv_path}: a slide is listed twice in split {split!r}")
    if labels_csv is None and path.is_dir():
        labels_csv = _config_data(path).get("labels_csv")
    cases = case_ids_from(Path(labels_csv) if labels_csv else None)
    case_ids = [cases.get(s, s) for s in slide_ids] if cases else None
    targets = np.array([names.index(r["label"]) for r in rows], dtype=int)
    return PredictionSet(csv_path, split, slide_ids, targets, probs, names, case_ids)


def run_case_ids(run_dir: Path, slide_ids: list[str]) -> list[str] | None:
    """Case of each slide from the labels CSV named in a run's (or a cv directory's first fold's) config.yaml;
    None when there is no case_id column, so the bootstrap resamples slides."""
    try:
        labels = _config_data(Path(run_dir)).get("labels_csv")
    except ValueError:
        return None
    cases = case_ids_from(Path(labels) if labels else None)
    return [cases.get(s, s) for s in slide_ids] if cases else None
