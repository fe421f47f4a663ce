"""How an embedding is taken from a model's output tokens.

``model``: the built model already pools (timm's token/average pooling, ``num_classes=0``): (B, D) as it is.
``cls``: the class token of the token sequence. ``cls+mean``: the class token concatenated with the mean of the
patch tokens, the register tokens excluded (Virchow/Virchow2, H0-mini's concatenated embedding, Midnight): timm
orders tokens [CLS, registers..., patches...] and ``num_prefix_tokens`` counts CLS + registers.
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("model", "cls", "cls+mean")


def prefix_tokens(model: nn.Module) -> int:
    """Tokens before the first patch token: CLS + registers (timm), 1 for a transformers ViT without registers."""
    n = getattr(model, "num_prefix_tokens", None)
    if n is None:
        cfg = getattr(model, "config", None)
        n = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
    return int(n)


def pool_tokens(tokens: torch.Tensor, mode: str, n_prefix: int) -> torch.Tensor:
    """(B, T, D) tokens -> (B, D) for ``cls`` or (B, 2D) for ``cls+mean`` (patch tokens = tokens[:, n_prefix:])."""
    if tokens.ndim != 3:
        raise ValueError(f"pooling '{mode}' needs (B, T, D) tokens, got shape {tuple(tokens.shape)}")
    cls = tokens[:, 0]
    if mode == "cls":
        return cls
    if mode == "cls+mean":
        return torch.cat([cls, tokens[:, n_prefix:].mean(dim=1)], dim=-1)
    raise ValueError(f"unknown pooling '{mode}' (one of {', '.join(POOLINGS)})")


class PooledEncoder(nn.Module):
    """A token-emitting model (timm with ``global_pool=''``, or transformers) as (B, 3, S, S) -> (B, D)."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        self.model, self.mode = model, mode
        self.n_prefix = prefix_tokens(model)

    @property
    def pretrained_cfg(self) -> dict:
        return getattr(self.model, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        tokens = getattr(out, "last_hidden_state", out)  # transformers returns a ModelOutput
        return pool_tokens(tokens, self.mode, self.n_prefix)
