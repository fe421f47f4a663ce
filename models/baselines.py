"""Mean- and max-pooling MIL baselines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .output import MILOutput


class _PoolingMIL(nn.Module):
    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim // 2
        self.in_dim, self.n_classes, self.hidden_dim = in_dim, n_classes, hidden_dim
        self.reduce = nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, n_classes))

    def embed_instances(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> (B, N, H)."""
        return self.reduce(x)

    def compute_loss(self, output: MILOutput, target: torch.Tensor, **_: float) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(output.logits.float(), target)
        return {"loss": loss, "slide_ce": loss}


class MeanPoolMIL(_PoolingMIL):
    """Slide embedding = mean of the real instances' hidden features; attention is uniform."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """x: (B, N, D), mask: (B, N) bool."""
        h = self.embed_instances(x)  # (B, N, H)
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        weights = mask.float() / mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, N)
        emb = torch.bmm(weights[:, None, :], h.float())[:, 0]  # (B, H)
        return MILOutput(logits=self.head(emb.to(h.dtype)), attention=weights[:, None, :], embedding=emb)


class MaxPoolMIL(_PoolingMIL):
    """Slide embedding = per-feature max over the real instances.

    The attention shown for it is each instance's share of the features it wins the max on.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """x: (B, N, D), mask: (B, N) bool."""
        h = self.embed_instances(x)  # (B, N, H)
        if mask is not None:
            h = h.masked_fill(~mask[:, :, None], float("-inf"))
        emb, winner = h.max(dim=1)  # (B, H), (B, H)
        counts = torch.zeros(h.shape[0], h.shape[1], device=h.device)  # (B, N)
        counts.scatter_add_(1, winner, torch.ones_like(winner, dtype=counts.dtype))
        attention = (counts / counts.sum(dim=1, keepdim=True))[:, None, :]  # (B, 1, N)
        return MILOutput(logits=self.head(emb), attention=attention, embedding=emb.float())
