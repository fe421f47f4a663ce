"""What ``acmil train``, ``test`` and ``cv`` return: typed results that ``cv`` and ``demo`` compose.

Light at import (numpy only): ``acmil.training.cli`` names these types without importing Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Predictions:
    """Per-slide probabilities of one evaluation, as numbers (``predictions.csv`` is written from these).

    Shapes: ``probabilities`` (n, C) in ``class_names`` order; every list has n entries.
    """

    class_names: list[str]
    slide_ids: list[str]
    splits: list[str]
    labels: list[str]
    groups: list[str]  # the case of each slide (the slide itself without a case_id column)
    probabilities: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        """(n,) index of each slide's label in ``class_names``."""
        return np.array([self.class_names.index(label) for label in self.labels], dtype=int)

    def select(self, split: str) -> Predictions:
        keep = [i for i, s in enumerate(self.splits) if s == split]
        return Predictions(
            self.class_names,
            [self.slide_ids[i] for i in keep],
            [self.splits[i] for i in keep],
            [self.labels[i] for i in keep],
            [self.groups[i] for i in keep],
            self.probabilities[keep],
        )

    def rows(self) -> list[dict[str, Any]]:
        """CSV rows: slide_id, split, label, predicted, prob_<class> (6 decimals)."""
        from .metrics import prediction_rows

        rows = []
        for i, sid in enumerate(self.slide_ids):
            rows += prediction_rows(
                [sid], self.probabilities[i : i + 1], self.class_names, [self.labels[i]], self.splits[i]
            )
        return rows

    @property
    def fields(self) -> list[str]:
        return ["slide_id", "split", "label", "predicted"] + [f"prob_{c}" for c in self.class_names]

    @staticmethod
    def concat(parts: list[Predictions]) -> Predictions:
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise ValueError(f"cannot pool predictions of different classes: {[p.class_names for p in parts]}")
        return Predictions(
            names,
            [s for p in parts for s in p.slide_ids],
            [s for p in parts for s in p.splits],
            [s for p in parts for s in p.labels],
            [s for p in parts for s in p.groups],
            np.concatenate([p.probabilities for p in parts]).reshape(-1, len(names)),
        )


@dataclass(frozen=True)
class TrainResult:
    """One ``acmil train`` run: where it wrote, and what it measured (``metrics.json``: val and test)."""

    run_dir: Path
    best_checkpoint: Path  # the selected checkpoint, the one ``metrics`` evaluates
    last_checkpoint: Path
    metrics: dict[str, dict[str, Any]]
    splits: dict[str, Any]  # splits.json: train / val / test slide ids, source, seed, counts
    predictions: Predictions  # val and test slides, evaluated with best_checkpoint
    resumed_from: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return self.predictions.class_names


@dataclass(frozen=True)
class TestResult:
    """One ``acmil test``: the metrics of ``split`` and its predictions, written to ``out``."""

    __test__ = False  # not a pytest test class

    out: Path
    split: str
    metrics: dict[str, dict[str, Any]]
    predictions: Predictions
    paths: dict[str, Path] = field(default_factory=dict)
