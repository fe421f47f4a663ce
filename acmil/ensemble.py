"""Ensembles of checkpoints of one recipe (e.g. the folds of an ``acmil cv``): averaged probabilities.

Each member's probabilities are the softmax of its logits divided by its own temperature (``acmil
calibrate``, 1.0 when none); the ensemble's are their unweighted mean. Members must agree on the feature
recipe, the feature width and the class names (in order): otherwise averaging would mix columns that do
not mean the same thing, so :func:`load_ensemble` refuses and names both checkpoints and both values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from acmil.checkpoint import LoadedModel, ModelCard, load_model
from acmil.inference import BagPrediction, predict_bag
from acmil.recipe import identity


class EnsembleMismatch(ValueError):
    """Checkpoints that cannot be averaged (another recipe, feature width or label map)."""


@dataclass
class EnsemblePrediction:
    """One bag through every member.

    Attributes:
        probabilities: (C,) mean of the members' (temperature-scaled) probabilities.
        member_probabilities: (K, C), member k's.
        member_attention: (K, N), member k's attention averaged over its branches.
        members: member k's own :class:`~acmil.inference.BagPrediction` (its per-branch attention (M, N)).
    """

    probabilities: np.ndarray
    member_probabilities: np.ndarray
    member_attention: np.ndarray
    members: list[BagPrediction] = field(default_factory=list)

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def mean_attention(self) -> np.ndarray:
        """(N,) the members' attention averaged: the ensemble's heatmap."""
        return self.member_attention.mean(axis=0)


def _fold_number(path: Path) -> int:
    found = re.search(r"(\d+)$", path.name)
    return int(found.group(1)) if found else -1


def resolve_checkpoints(paths: list[str | os.PathLike]) -> list[Path]:
    """Checkpoint files from files, run directories (``RUN/checkpoints/best.ckpt``) and cv directories
    (every ``fold_<k>/checkpoints/best.ckpt``, in fold order). Raises FileNotFoundError naming the path."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append(path)
        elif (path / "checkpoints" / "best.ckpt").is_file():
            found.append(path / "checkpoints" / "best.ckpt")
        elif path.is_dir() and (
            folds := sorted(path.glob("fold_*/checkpoints/best.ckpt"), key=lambda p: _fold_number(p.parent.parent))
        ):
            found += folds
        else:
            raise FileNotFoundError(
                f"{path}: not a checkpoint, a run directory (checkpoints/best.ckpt) or a cv "
                "directory (fold_<k>/checkpoints/best.ckpt)"
            )
    return found


def _differences(a: ModelCard, b: ModelCard) -> list[str]:
    out = []
    if a.in_dim != b.in_dim:
        out.append(f"feature width {a.in_dim} vs {b.in_dim}")
    if list(a.class_names) != list(b.class_names):
        out.append(f"class names {a.class_names} vs {b.class_names}")
    ra, rb = identity(a.encoder or {}), identity(b.encoder or {})
    out += [f"recipe {k} {ra[k]!r} vs {rb[k]!r}" for k in sorted(set(ra) & set(rb)) if ra[k] != rb[k]]
    return out


@dataclass
class Ensemble:
    """K loaded models (K >= 1) that agree on recipe, feature width and class names."""

    members: list[LoadedModel]

    @property
    def card(self) -> ModelCard:
        """The first member's card (the others agree on what matters here)."""
        return self.members[0].card

    @property
    def class_names(self) -> list[str]:
        return list(self.card.class_names)

    @property
    def in_dim(self) -> int:
        return int(self.card.in_dim)

    def to(self, device: str | torch.device) -> Ensemble:
        for member in self.members:
            member.model.to(device)
        return self

    def predict(self, features: np.ndarray | torch.Tensor) -> EnsemblePrediction:
        """features (N, D) -> every member's prediction and their mean (see :class:`EnsemblePrediction`)."""
        preds = [predict_bag(m.model, features, m.temperature) for m in self.members]
        return EnsemblePrediction(
            probabilities=np.mean([p.probabilities for p in preds], axis=0),
            member_probabilities=np.stack([p.probabilities for p in preds]),
            member_attention=np.stack([p.mean_attention for p in preds]),
            members=preds,
        )


def check_compatible(members: list[LoadedModel]) -> None:
    """Raise :class:`EnsembleMismatch` naming the first member and each one that differs, and how."""
    first = members[0]
    problems = [
        f"{m.path} differs from {first.path}: {'; '.join(diff)}"
        for m in members[1:]
        if (diff := _differences(first.card, m.card))
    ]
    if problems:
        raise EnsembleMismatch("these checkpoints cannot be averaged into one ensemble: " + " | ".join(problems))


def load_ensemble(paths: list[str | os.PathLike], map_location: str | torch.device = "cpu") -> Ensemble:
    """Load every checkpoint of ``paths`` (see :func:`resolve_checkpoints`) and check they agree."""
    files = resolve_checkpoints(paths)
    if not files:
        raise FileNotFoundError("no checkpoint given")
    members = [load_model(f, map_location=map_location) for f in files]
    for member, f in zip(members, files, strict=True):
        member.path = member.path or Path(f)
    check_compatible(members)
    return Ensemble(members)
