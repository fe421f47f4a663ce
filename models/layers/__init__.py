"""Building blocks shared by the MIL models."""

from .gated_attention import GatedAttention
from .masked_softmax import masked_softmax
from .multihead_attention import MultiHeadPool, QueryScores, split_heads
from .topk_masking import check_masking_args, stochastic_topk_mask

__all__ = [
    "GatedAttention",
    "check_masking_args",
    "MultiHeadPool",
    "QueryScores",
    "masked_softmax",
    "split_heads",
    "stochastic_topk_mask",
]
