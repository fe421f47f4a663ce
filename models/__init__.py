"""MIL models (pure torch). A model takes features (B, N, D) and a mask (B, N) and returns MILOutput."""

from __future__ import annotations

from typing import Any

from torch import nn

from .abmil import ABMIL
from .acmil import ACMIL, acmil_loss, diversity_loss
from .acmil_mha import ACMILMHA
from .baselines import MaxPoolMIL, MeanPoolMIL
from .output import MILOutput

MODELS: dict[str, type[nn.Module]] = {
    "acmil": ACMIL,
    "acmil_mha": ACMILMHA,
    "abmil": ABMIL,
    "mean": MeanPoolMIL,
    "max": MaxPoolMIL,
}


def create_model(name: str, in_dim: int, n_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model by name (see ``MODELS``)."""
    try:
        cls = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(in_dim=in_dim, n_classes=n_classes, **kwargs)


__all__ = [
    "ABMIL",
    "ACMIL",
    "ACMILMHA",
    "MODELS",
    "MILOutput",
    "MaxPoolMIL",
    "MeanPoolMIL",
    "acmil_loss",
    "create_model",
    "diversity_loss",
]
