"""Gated attention (Ilse et al., 2018) with one output per attention branch."""

from __future__ import annotations

import torch
from torch import nn


class GatedAttention(nn.Module):
    """Attention logits ``w^T (tanh(V h) * sigmoid(U h))``, one row per branch.

    V and U are shared by all branches; only the last linear layer has one output per branch, as in
    ACMIL's Multiple Branch Attention.

    Args:
        in_dim: width of the instance embeddings h.
        attn_dim: width of the V and U projections.
        n_branches: number of attention branches M.
    """

    def __init__(self, in_dim: int, attn_dim: int = 128, n_branches: int = 1) -> None:
        super().__init__()
        self.attention_V = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Tanh())
        self.attention_U = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Sigmoid())
        self.attention_weights = nn.Linear(attn_dim, n_branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, N, H) -> logits (B, M, N), float32."""
        gated = self.attention_V(h) * self.attention_U(h)  # (B, N, attn_dim), autocast's dtype if enabled
        # The logits themselves in float32 even under autocast: they feed masking and a softmax.
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.attention_weights(gated.float()).transpose(1, 2)  # (B, M, N)
