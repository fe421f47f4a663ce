"""Multi-head attention of one learned query over a bag's instances (ACMIL's ``--arch mha`` blocks).

The work is split in two so masking can happen between the logits and the softmax, as in ACMIL:
:class:`QueryScores` gives the per-head attention logits of one query, :class:`MultiHeadPool` pools the
instances with given per-head weights. Together they are the reference's ``MutiHeadAttention``; the pool
alone is its ``MutiHeadAttention_modify``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, N, H) -> (B, K, N, H / K) for K = n_heads."""
    B, N, H = x.shape
    return x.reshape(B, N, n_heads, H // n_heads).transpose(1, 2)


class QueryScores(nn.Module):
    """Scaled dot-product logits of one query against every instance, per head.

    ``logits[b, k, n] = <Wq q, Wk h_bn>_k / sqrt(H / K)`` over the k-th slice of width H / K.

    Args:
        dim: width H of the query and of the instance features.
        n_heads: number of heads K (must divide ``dim``).
    """

    def __init__(self, dim: int, n_heads: int = 8) -> None:
        super().__init__()
        if n_heads < 1 or dim % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide the hidden width {dim}")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """query: (H,), h: (B, N, H) -> logits (B, K, N), float32."""
        k = split_heads(self.k_proj(h), self.n_heads)  # (B, K, N, c)
        q = split_heads(self.q_proj(query)[None, None, :], self.n_heads)  # (1, K, 1, c)
        # The logits in float32 even under autocast: they feed masking and a softmax.
        with torch.autocast(device_type=h.device.type, enabled=False):
            logits = q.float() @ k.float().transpose(-1, -2)  # (B, K, 1, N)
        return logits[:, :, 0] / math.sqrt(k.shape[-1])  # (B, K, N)


class MultiHeadPool(nn.Module):
    """Pool instances with per-head weights: ``LayerNorm(Dropout(Wo concat_k(sum_n a_kn Wv_k h_n)))``.

    Args:
        dim: width H of the instance features (and of the output).
        n_heads: number of heads K (must divide ``dim``).
        dropout: dropout on the projected output (training only).
    """

    def __init__(self, dim: int, n_heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        if n_heads < 1 or dim % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide the hidden width {dim}")
        self.n_heads = n_heads
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, weights: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """weights: (B, K, N) summing to 1 over N; h: (B, N, H) -> pooled (B, H)."""
        v = split_heads(self.v_proj(h), self.n_heads)  # (B, K, N, c)
        # Pool in float32 so attention weights keep their precision under autocast.
        pooled = (weights[:, :, None, :].float() @ v.float())[:, :, 0]  # (B, K, c)
        out = self.out_proj(pooled.flatten(1).to(v.dtype))  # (B, H): heads concatenated, then projected
        return self.layer_norm(self.dropout(out))
