"""Building blocks shared by the MIL models."""

from .gated_attention import GatedAttention
from .masked_softmax import masked_softmax
from .topk_masking import stochastic_topk_mask

__all__ = ["GatedAttention", "masked_softmax", "stochastic_topk_mask"]
