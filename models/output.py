"""The one output type of every MIL model."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MILOutput:
    """Output of a MIL model's forward pass.

    Attributes:
        logits: (B, C) slide prediction.
        attention: (B, M, N) post-softmax attention per branch; padded and masked positions are 0.
        branch_logits: (B, M, C) per-branch predictions (ACMIL with M > 1), else None.
        embedding: (B, H) slide embedding fed to the slide head.
        head_attention: (B, M, K, N) per-head attention of multi-head models (``attention`` is its mean
            over the K heads), else None.
    """

    logits: torch.Tensor
    attention: torch.Tensor
    branch_logits: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    head_attention: torch.Tensor | None = None
