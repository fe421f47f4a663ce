"""Checkpoints: what a trained model carries, and loading it without Lightning.

A checkpoint is a ``torch.save``d dict (Lightning's own ``.ckpt`` is one) with:

- ``state_dict``: the model's weights, keys prefixed ``model.`` (as the LightningModule holds them);
- ``acmil``: a :class:`ModelCard` as a dict: architecture name and arguments, feature width, class
  names (the label map, in index order) and the encoder provenance of the training features.

The service, the analyses and ``acmil predict`` only need :func:`load_model`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acmil.atomic import atomic_path
from acmil.models import create_model

CARD_KEY = "acmil"
STATE_PREFIX = "model."


@dataclass
class ModelCard:
    """Everything needed to rebuild and describe a trained model."""

    arch: str
    arch_args: dict[str, Any]
    in_dim: int
    class_names: list[str]
    encoder: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    card_version: int = 1

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class LoadedModel:
    """A model in eval mode with its card."""

    model: nn.Module
    card: ModelCard
    path: Path | None = None

    @property
    def temperature(self) -> float:
        """Temperature scaling of the logits fitted by ``acmil calibrate`` (card.extra; 1.0 when none)."""
        return float(self.card.extra.get("temperature", 1.0))


def build_model(card: ModelCard) -> nn.Module:
    return create_model(card.arch, in_dim=card.in_dim, n_classes=card.n_classes, **card.arch_args)


def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pure model's weights out of a checkpoint state dict (strips the ``model.`` prefix)."""
    return {k[len(STATE_PREFIX):]: v for k, v in state_dict.items() if k.startswith(STATE_PREFIX)}


def save_model(path: str | os.PathLike, model: nn.Module, card: ModelCard) -> Path:
    """Write a checkpoint that :func:`load_model` (and the service) read, atomically."""
    payload = {
        "state_dict": {STATE_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()},
        CARD_KEY: asdict(card),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_card(checkpoint: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> ModelCard:
    card = checkpoint.get(CARD_KEY)
    if card is None:
        raise ValueError(f"{path}: not an acmil checkpoint (no '{CARD_KEY}' entry)")
    return ModelCard(**card)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint written by training or ``acmil import-checkpoint``; the model is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{path}: cannot read checkpoint ({err})") from err
    card = read_card(checkpoint, path)
    model = build_model(card)
    model.load_state_dict(model_state(checkpoint["state_dict"]))
    model.eval()
    return LoadedModel(model=model, card=card, path=path)
