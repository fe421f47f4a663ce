"""Inference on one slide's features: probabilities, attention and instance embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from acmil.features import FeatureFileError


@dataclass
class BagPrediction:
    """Eval-mode prediction for one bag.

    Attributes:
        probabilities: (C,) softmax of the slide logits.
        attention: (M, N) per-branch attention; the heatmap is ``attention.mean(0)``.
        branch_probabilities: (M, C) or None.
    """

    probabilities: np.ndarray
    attention: np.ndarray
    branch_probabilities: np.ndarray | None = None

    @property
    def predicted(self) -> int:
        return int(self.probabilities.argmax())

    @property
    def mean_attention(self) -> np.ndarray:
        """(N,) mean over branches: the attention shown to people."""
        return self.attention.mean(axis=0)


class FeatureWidthError(FeatureFileError):
    """Features of another width than the model's input (another encoder's features)."""


def check_feature_width(dim: int, in_dim: int | None, source: object = "features") -> None:
    """The one width check of every command that runs a model (predict, serve, heatmap, the analyses).

    Raises:
        FeatureWidthError naming ``source`` (a file or slide id) and both widths.
    """
    if in_dim is not None and int(dim) != int(in_dim):
        raise FeatureWidthError(
            f"{source}: {dim}-d features, the model expects {in_dim}-d (features of another "
            "encoder? preprocess the slides with the checkpoint's encoder)"
        )


def _as_tensor(features: np.ndarray | torch.Tensor, model: nn.Module, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(x.shape)}")
    check_feature_width(x.shape[1], getattr(model, "in_dim", None))
    return x.to(device)[None]  # (1, N, D)


@torch.inference_mode()
def predict_bag(model: nn.Module, features: np.ndarray | torch.Tensor, temperature: float = 1.0) -> BagPrediction:
    """Run ``model`` in eval mode on features (N, D) and return probabilities (of logits / ``temperature``,
    the card's calibration) and attention."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model(_as_tensor(features, model, device))
        probs = torch.softmax(out.logits.float() / temperature, dim=-1)[0].cpu().numpy()
        attention = out.attention[0].float().cpu().numpy()
        branch = None
        if out.branch_logits is not None:
            branch = torch.softmax(out.branch_logits.float(), dim=-1)[0].cpu().numpy()
    finally:
        model.train(was_training)
    return BagPrediction(probs, attention, branch)


@torch.inference_mode()
def instance_embeddings(model: nn.Module, features: np.ndarray | torch.Tensor) -> np.ndarray:
    """The model's hidden instance features (N, H) for features (N, D)."""
    device = next(model.parameters()).device
    return model.embed_instances(_as_tensor(features, model, device))[0].float().cpu().numpy()
