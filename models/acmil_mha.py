"""ACMIL with multi-head attention (the reference's ``ACMIL_MHA``, ``--arch mha``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .acmil import _head, acmil_loss, diversity_loss
from .layers import MultiHeadPool, QueryScores, check_masking_args, masked_softmax, stochastic_topk_mask
from .output import MILOutput


class ACMILMHA(nn.Module):
    """ACMIL whose attention branches are multi-head attention of one learned query each.

    Instance features go through a bias-free Linear + ReLU to ``hidden_dim`` (h). Branch m has a learned
    query q_m and its own K-head attention: logits ``s_mk = <Wq_m q_m, Wk_m h>_k / sqrt(H/K)`` (B, M, K, N),
    softmax over N per head, pooled per head with ``Wv_m`` and projected (``Wo_m``, dropout, LayerNorm)
    into the branch embedding that its linear head classifies. The slide embedding pools h once more
    (its own ``Wv``, ``Wo``, LayerNorm) with, per head, the mean over branches of the branch softmaxes.
    In training, Stochastic Top-K Instance Masking hides ``int(top_k * mask_ratio)`` random instances
    among the ``top_k`` highest logits of every (branch, head) row, before the softmax.

    ``attention`` (B, M, N) is the mean over heads of each branch's softmax, so the heatmap (its mean
    over branches) is the mean of all branch softmaxes, as for the gated version.

    Args:
        in_dim: patch feature width D.
        n_classes: number of classes C.
        n_branches: attention branches M (the reference's ``n_token``).
        top_k: candidates for masking per branch and head (``n_masked_patch``).
        mask_ratio: fraction of the candidates masked (``mask_drop``).
        hidden_dim: width H of the reduced features; default ``in_dim // 2``.
        n_heads: heads K per attention (must divide H); the reference uses 8.
        attn_dropout: dropout on the attention outputs (training only); the reference uses 0.1.
        dropout: dropout before each linear head.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        n_branches: int = 5,
        top_k: int = 10,
        mask_ratio: float = 0.6,
        hidden_dim: int | None = None,
        n_heads: int = 8,
        attn_dropout: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_masking_args(n_branches, mask_ratio)
        hidden_dim = hidden_dim or in_dim // 2
        self.in_dim, self.n_classes, self.hidden_dim = in_dim, n_classes, hidden_dim
        self.n_branches, self.top_k, self.mask_ratio, self.n_heads = n_branches, top_k, mask_ratio, n_heads
        self.reduce = nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.ReLU())
        self.queries = nn.Parameter(torch.empty(n_branches, hidden_dim))  # (M, H)
        nn.init.normal_(self.queries, std=1e-6)
        self.branch_scores = nn.ModuleList(QueryScores(hidden_dim, n_heads) for _ in range(n_branches))
        # One branch has no branch loss (see acmil_loss), so it gets neither a branch pool nor a head:
        # gradient-less parameters would only confuse DDP and the checkpoint.
        n_pooled = n_branches if n_branches > 1 else 0
        self.branch_pools = nn.ModuleList(MultiHeadPool(hidden_dim, n_heads, attn_dropout) for _ in range(n_pooled))
        self.branch_heads = nn.ModuleList(_head(hidden_dim, n_classes, dropout) for _ in range(n_pooled))
        self.bag_pool = MultiHeadPool(hidden_dim, n_heads, attn_dropout)
        self.slide_head = _head(hidden_dim, n_classes, dropout)

    def embed_instances(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> hidden instance features (B, N, H)."""
        return self.reduce(x)

    def attend(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Post-softmax attention per branch and head (B, M, K, N), float32, top-k masked in training."""
        logits = torch.stack([s(self.queries[i], h) for i, s in enumerate(self.branch_scores)], dim=1)
        B, M, K, N = logits.shape  # (B, M, K, N)
        keep = mask[:, None, None, :] if mask is not None else None  # (B, 1, 1, N)
        if self.training and self.top_k > 0 and self.mask_ratio > 0:
            rows = logits.reshape(B, M * K, N)  # every (branch, head) row is masked on its own
            dropped = stochastic_topk_mask(rows, mask, self.top_k, self.mask_ratio).reshape(B, M, K, N)
            keep = ~dropped if keep is None else keep & ~dropped
        return masked_softmax(logits, keep, dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """Args:
        x: (B, N, D) patch features.
        mask: (B, N) bool, True = real patch; None = no padding.
        """
        h = self.embed_instances(x)  # (B, N, H)
        head_attention = self.attend(h, mask)  # (B, M, K, N)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        branch_logits = None
        if len(self.branch_heads):
            heads = [
                head(pool(head_attention[:, i], h).to(dtype))
                for i, (pool, head) in enumerate(zip(self.branch_pools, self.branch_heads, strict=True))
            ]
            branch_logits = torch.stack(heads, dim=1)  # (B, M, C)
        slide_emb = self.bag_pool(head_attention.mean(dim=1), h)  # per head, the mean over branches: (B, H)
        logits = self.slide_head(slide_emb.to(dtype))  # (B, C)
        return MILOutput(
            logits=logits,
            attention=head_attention.mean(dim=2),
            branch_logits=branch_logits,
            embedding=slide_emb.float(),
            head_attention=head_attention,
        )

    def compute_loss(
        self,
        output: MILOutput,
        target: torch.Tensor,
        branch_weight: float = 1.0,
        slide_weight: float = 1.0,
        diversity_weight: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """``branch_ce``, ``slide_ce``, ``diversity`` and ``loss``, as for ACMIL.

        Diversity is computed per head (branches compared head by head, then averaged), as the reference
        does on its (K, M, N) attention.
        """
        terms = acmil_loss(output, target, branch_weight, slide_weight, diversity_weight=0.0)
        if output.head_attention is not None:
            B, M, K, N = output.head_attention.shape
            per_head = output.head_attention.transpose(1, 2).reshape(B * K, M, N)
            terms["diversity"] = diversity_loss(per_head)
            terms["loss"] = terms["loss"] + diversity_weight * terms["diversity"]
        return terms

    @classmethod
    def from_reference_state_dict(cls, state_dict: Mapping[str, torch.Tensor], **kwargs) -> ACMILMHA:
        """Build a model from a state dict of the reference implementation's ``ACMIL_MHA``.

        Dimensions are read from the tensors; ``kwargs`` may set ``top_k``, ``mask_ratio``, ``n_heads``
        (the reference always uses 8), ``attn_dropout`` and ``dropout``.
        """
        sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
        required = (
            "dimreduction.fc1.weight",
            "q",
            "sub_attention.0.q_proj.weight",
            "bag_attention.v_proj.weight",
            "Slide_classifier.fc.weight",
        )
        missing = [k for k in required if k not in sd]
        if missing:
            raise ValueError(f"not an ACMIL_MHA state dict: missing {missing}")
        hidden_dim, in_dim = sd["dimreduction.fc1.weight"].shape
        n_branches = sd["q"].shape[1]
        n_classes = sd["Slide_classifier.fc.weight"].shape[0]
        model = cls(in_dim, n_classes, n_branches=n_branches, hidden_dim=hidden_dim, **kwargs)
        ours = {
            "reduce.0.weight": sd["dimreduction.fc1.weight"],
            "queries": sd["q"].reshape(n_branches, hidden_dim),
            "slide_head.1.weight": sd["Slide_classifier.fc.weight"],
            "slide_head.1.bias": sd["Slide_classifier.fc.bias"],
        }
        pool_parts = ("v_proj", "out_proj", "layer_norm")
        for p in ("weight", "bias"):
            for part in pool_parts:
                ours[f"bag_pool.{part}.{p}"] = sd[f"bag_attention.{part}.{p}"]
            for i in range(n_branches):
                for part in ("q_proj", "k_proj"):
                    ours[f"branch_scores.{i}.{part}.{p}"] = sd[f"sub_attention.{i}.{part}.{p}"]
            for i in range(len(model.branch_heads)):
                for part in pool_parts:
                    ours[f"branch_pools.{i}.{part}.{p}"] = sd[f"sub_attention.{i}.{part}.{p}"]
                ours[f"branch_heads.{i}.1.{p}"] = sd[f"classifier.{i}.fc.{p}"]
        model.load_state_dict(ours)
        return model
