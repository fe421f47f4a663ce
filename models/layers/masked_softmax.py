"""Softmax over instances that ignores padded positions."""

from __future__ import annotations

import torch


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Softmax of ``logits`` along ``dim`` where positions with ``mask == False`` get exactly 0.

    Computed in float32 whatever the input dtype: a large negative fill overflows half precision.

    Args:
        logits: (..., N) attention logits.
        mask: boolean, broadcastable to ``logits``; True = real instance. None = all real.

    Returns:
        (..., N) float32 weights summing to 1 over the real positions of each row.
    """
    logits = logits.float()
    if mask is not None:
        # -inf before the softmax so padded patches get exactly 0 attention.
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=dim)
