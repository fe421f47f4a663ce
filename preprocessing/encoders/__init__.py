"""Patch encoders: named recipes (``recipes.py``, ``spec.py``), their models (``build.py``, ``pooling.py``), the
local weights store (``weights.py``, ``resolve.py``, ``offline.py``) and the :class:`Encoder` preprocessing runs
(``core.py``). Names are imported lazily, so ``acmil weights --help`` does not wait for torch."""

from __future__ import annotations

import importlib

_WHERE = {
    "IMAGENET_MEAN": "core",
    "IMAGENET_STD": "core",
    "Encoder": "core",
    "apply_transform": "core",
    "load_encoder": "core",
    "EncoderError": "errors",
    "WeightsUnavailable": "errors",
    "RECIPES": "recipes",
    "get_recipe": "recipes",
    "Recipe": "spec",
    "Transform": "spec",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
