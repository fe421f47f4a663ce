"""Stochastic Top-K Instance Masking (STKIM) from ACMIL."""

from __future__ import annotations

import torch


def stochastic_topk_mask(
    logits: torch.Tensor,
    mask: torch.Tensor | None,
    top_k: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose, per bag and branch, instances to hide from the softmax.

    For each (bag, branch) row: take the ``k = min(top_k, n_real)`` highest logits among the real
    instances and pick ``int(k * mask_ratio)`` of them uniformly at random without replacement
    (never all real instances, so a row keeps some attention).

    Args:
        logits: (B, M, N) attention logits.
        mask: (B, N) bool, True = real instance; None = all real.
        top_k: size of the candidate set.
        mask_ratio: fraction of the candidates to drop.
        generator: optional RNG for the random choice.

    Returns:
        (B, M, N) bool, True = dropped for this forward pass.
    """
    B, M, N = logits.shape
    if mask is None:
        mask = torch.ones(B, N, dtype=torch.bool, device=logits.device)
    n_real = mask.sum(dim=1)  # (B,)
    k_max = min(int(top_k), N)
    dropped = torch.zeros(B, M, N, dtype=torch.bool, device=logits.device)
    if k_max <= 0 or mask_ratio <= 0:
        return dropped
    k = n_real.clamp(max=k_max)  # (B,) candidates per bag
    n_drop = torch.minimum((k.float() * mask_ratio).long(), (n_real - 1).clamp(min=0))  # (B,)
    ranked = logits.float().masked_fill(~mask[:, None, :], float("-inf"))
    candidates = ranked.topk(k_max, dim=-1).indices  # (B, M, k_max)
    # Random order among the first k candidates; positions past k never come first.
    scores = torch.rand(B, M, k_max, device=logits.device, generator=generator)
    position = torch.arange(k_max, device=logits.device)
    scores = scores.masked_fill(position[None, None, :] >= k[:, None, None], 2.0)
    order = scores.argsort(dim=-1)  # (B, M, k_max)
    chosen = candidates.gather(-1, order)  # candidates in random order
    take = position[None, None, :] < n_drop[:, None, None]  # (B, 1, k_max)
    dropped.scatter_(-1, chosen, take.expand(B, M, k_max))
    return dropped


def check_masking_args(n_branches: int, mask_ratio: float) -> None:
    """The branch count and masking ratio every multi-branch ACMIL variant takes (ValueError otherwise)."""
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    if n_branches < 1:
        raise ValueError(f"n_branches must be >= 1, got {n_branches}")
