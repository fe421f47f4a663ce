"""ABMIL: gated attention MIL (Ilse et al., 2018), i.e. ACMIL with one branch and no masking."""

from __future__ import annotations

from .acmil import ACMIL


class ABMIL(ACMIL):
    """Gated-attention ABMIL: one attention branch, no instance masking.

    Args:
        in_dim: patch feature width D.
        n_classes: number of classes C.
        hidden_dim: width H of the reduced features; default ``in_dim // 2``.
        attn_dim: width of the gated attention projections.
        dropout: dropout before the linear head.
    """

    def __init__(
        self, in_dim: int, n_classes: int, hidden_dim: int | None = None, attn_dim: int = 128, dropout: float = 0.0
    ) -> None:
        super().__init__(
            in_dim,
            n_classes,
            n_branches=1,
            top_k=0,
            mask_ratio=0.0,
            hidden_dim=hidden_dim,
            attn_dim=attn_dim,
            dropout=dropout,
        )
