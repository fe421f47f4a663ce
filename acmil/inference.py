"""Inference on one slide's features: probabilities, attention and instance embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


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


def _as_tensor(features: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(features, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got {tuple(x.shape)}")
    return x.to(device)[None]  # (1, N, D)


@torch.inference_mode()
def predict_bag(model: nn.Module, features: np.ndarray | torch.Tensor, temperature: float = 1.0) -> BagPrediction:
    """Run ``model`` in eval mode on features (N, D) and return probabilities (of logits / ``temperature``,
    the card's calibration) and attention."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model(_as_tensor(features, device))
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
    return model.embed_instances(_as_tensor(features, device))[0].float().cpu().numpy()
