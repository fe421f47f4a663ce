"""Patch encoders: named recipes (``recipes.py``), their models (``build.py``, ``pooling.py``), the local weights
store (``weights.py``, ``resolve.py``, ``offline.py``) and the :class:`Encoder` preprocessing runs (``core.py``)."""

from .core import IMAGENET_MEAN, IMAGENET_STD, Encoder, apply_transform, load_encoder
from .errors import EncoderError, WeightsUnavailable
from .recipes import RECIPES, Recipe, Transform, get_recipe

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RECIPES",
    "Encoder",
    "EncoderError",
    "Recipe",
    "Transform",
    "WeightsUnavailable",
    "apply_transform",
    "get_recipe",
    "load_encoder",
]
