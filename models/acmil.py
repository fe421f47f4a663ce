"""ACMIL: Attention-Challenging Multiple Instance Learning (Zhang et al., ECCV 2024)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GatedAttention, check_masking_args, masked_softmax, stochastic_topk_mask
from .output import MILOutput


class ACMIL(nn.Module):
    """ACMIL with gated attention (the reference ``ACMIL_GA``).

    Instance features go through a bias-free Linear + ReLU to ``hidden_dim``. A gated attention module
    with ``n_branches`` outputs gives one attention distribution per branch (Multiple Branch Attention);
    each branch pools the hidden features and has its own linear head. The slide head classifies the
    mean over branches of the pooled features. In training, Stochastic Top-K Instance Masking hides
    ``int(top_k * mask_ratio)`` random instances among each branch's ``top_k`` from the softmax.

    Args:
        in_dim: patch feature width D.
        n_classes: number of classes C.
        n_branches: attention branches M.
        top_k: candidates for masking per branch.
        mask_ratio: fraction of the candidates masked.
        hidden_dim: width H of the reduced features; default ``in_dim // 2``.
        attn_dim: width of the gated attention projections.
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
        attn_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_masking_args(n_branches, mask_ratio)
        hidden_dim = hidden_dim or in_dim // 2
        self.in_dim, self.n_classes, self.hidden_dim = in_dim, n_classes, hidden_dim
        self.n_branches, self.top_k, self.mask_ratio = n_branches, top_k, mask_ratio
        self.reduce = nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.ReLU())
        self.attention = GatedAttention(hidden_dim, attn_dim, n_branches)
        # One branch has no branch loss (see acmil_loss), so it gets no branch head: an untrained,
        # gradient-less head would only confuse DDP and the checkpoint.
        n_heads = n_branches if n_branches > 1 else 0
        self.branch_heads = nn.ModuleList(_head(hidden_dim, n_classes, dropout) for _ in range(n_heads))
        self.slide_head = _head(hidden_dim, n_classes, dropout)

    def embed_instances(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) -> hidden instance features (B, N, H)."""
        return self.reduce(x)

    def attend(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Post-softmax attention (B, M, N), float32, with top-k masking in training mode."""
        logits = self.attention(h)  # (B, M, N) float32
        keep = mask[:, None, :] if mask is not None else None  # (B, 1, N)
        if self.training and self.top_k > 0 and self.mask_ratio > 0:
            dropped = stochastic_topk_mask(logits, mask, self.top_k, self.mask_ratio)  # (B, M, N)
            keep = ~dropped if keep is None else keep & ~dropped
        return masked_softmax(logits, keep, dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """Args:
        x: (B, N, D) patch features.
        mask: (B, N) bool, True = real patch; None = no padding.
        """
        h = self.embed_instances(x)  # (B, N, H)
        attention = self.attend(h, mask)  # (B, M, N)
        # Pool in float32 so attention weights keep their precision under autocast.
        branch_emb = torch.bmm(attention, h.float())  # (B, M, H)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        branch_logits = None
        if len(self.branch_heads):
            heads = [head(branch_emb[:, i].to(dtype)) for i, head in enumerate(self.branch_heads)]
            branch_logits = torch.stack(heads, dim=1)  # (B, M, C)
        slide_emb = branch_emb.mean(dim=1)  # (B, H): the mean of branch attention applied to h
        logits = self.slide_head(slide_emb.to(dtype))  # (B, C)
        return MILOutput(logits=logits, attention=attention, branch_logits=branch_logits, embedding=slide_emb)

    def compute_loss(
        self,
        output: MILOutput,
        target: torch.Tensor,
        branch_weight: float = 1.0,
        slide_weight: float = 1.0,
        diversity_weight: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Loss terms by name: ``branch_ce``, ``slide_ce``, ``diversity`` and their weighted sum ``loss``."""
        return acmil_loss(output, target, branch_weight, slide_weight, diversity_weight)

    @classmethod
    def from_reference_state_dict(cls, state_dict: Mapping[str, torch.Tensor], **kwargs) -> ACMIL:
        """Build a model from a state dict of the reference implementation's ``ACMIL_GA``.

        Dimensions are read from the tensors; ``kwargs`` may set ``top_k``, ``mask_ratio`` and ``dropout``.
        """
        sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
        required = ("dimreduction.fc1.weight", "attention.attention_weights.weight", "Slide_classifier.fc.weight")
        missing = [k for k in required if k not in sd]
        if missing:
            raise ValueError(f"not an ACMIL_GA state dict: missing {missing}")
        hidden_dim, in_dim = sd["dimreduction.fc1.weight"].shape
        n_branches, attn_dim = sd["attention.attention_weights.weight"].shape
        n_classes = sd["Slide_classifier.fc.weight"].shape[0]
        model = cls(in_dim, n_classes, n_branches=n_branches, hidden_dim=hidden_dim, attn_dim=attn_dim, **kwargs)
        ours = {
            "reduce.0.weight": sd["dimreduction.fc1.weight"],
            "slide_head.1.weight": sd["Slide_classifier.fc.weight"],
            "slide_head.1.bias": sd["Slide_classifier.fc.bias"],
        }
        for part in ("attention_V.0", "attention_U.0", "attention_weights"):
            for p in ("weight", "bias"):
                ours[f"attention.{part}.{p}"] = sd[f"attention.{part}.{p}"]
        for i in range(len(model.branch_heads)):
            for p in ("weight", "bias"):
                ours[f"branch_heads.{i}.1.{p}"] = sd[f"classifier.{i}.fc.{p}"]
        model.load_state_dict(ours)
        return model


def _head(in_dim: int, n_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))


def diversity_loss(attention: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity between branches' attention. attention: (B, M, N) -> scalar."""
    M = attention.shape[1]
    if M < 2:
        return attention.new_zeros(())
    unit = F.normalize(attention.float(), dim=-1)  # (B, M, N)
    sim = torch.bmm(unit, unit.transpose(1, 2))  # (B, M, M)
    i, j = torch.triu_indices(M, M, offset=1, device=attention.device)
    return sim[:, i, j].mean()


def acmil_loss(
    output: MILOutput,
    target: torch.Tensor,
    branch_weight: float = 1.0,
    slide_weight: float = 1.0,
    diversity_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Branch CE (mean over branches) + slide CE + diversity, each weighted; terms returned by name."""
    slide_ce = F.cross_entropy(output.logits.float(), target)
    if output.branch_logits is not None and output.branch_logits.shape[1] > 1:
        B, M, C = output.branch_logits.shape
        branch_ce = F.cross_entropy(output.branch_logits.float().reshape(B * M, C), target.repeat_interleave(M))
    else:
        branch_ce = slide_ce.new_zeros(())
    diversity = diversity_loss(output.attention)
    loss = branch_weight * branch_ce + slide_weight * slide_ce + diversity_weight * diversity
    return {"loss": loss, "branch_ce": branch_ce, "slide_ce": slide_ce, "diversity": diversity}
