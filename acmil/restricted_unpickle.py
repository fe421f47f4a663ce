"""Read pickles of foreign checkpoints without running anything they name.

``torch.load(path, pickle_module=restricted_unpickle)`` unpickles with :class:`RestrictedUnpickler`, whose
``find_class`` never imports a module: it hands out a few known, side-effect-free constructors (ordered
dicts, tensor rebuilding, dtypes) and, for every other class or function the pickle names, a stand-in
type that only records what the pickle gave it. Calling or instantiating a stand-in builds plain data; so
``os.system`` in a crafted file becomes a harmless record, and the reference code's ``utils.utils.Struct``
config becomes an object whose attributes are its fields. :func:`plain` turns stand-ins into dicts.

(Checkpoints of this project need none of this: they load with ``torch.load(weights_only=True)``.)
"""

from __future__ import annotations

import collections
import pickle
from typing import Any

import torch


def _rebuild_tensor(storage, offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch's own tensor rebuild, minus the pickled backward hooks (callables from the file)."""
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, requires_grad, collections.OrderedDict(), metadata
    )


# What torch.save writes for tensors and state dicts (storages are resolved by torch itself).
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda data, requires_grad, hooks: torch.nn.Parameter(data, requires_grad),
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): lambda text, encoding="latin1": text.encode(encoding),  # bytes under protocol 2
}
_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


class StandIn:
    """An object of a class the pickle named but that was not imported; holds what the pickle gave."""

    pickled_as = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = super().__new__(cls)
        object.__setattr__(obj, "_args", args)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_kwargs", kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict) and all(isinstance(k, str) for k in state):
            self.__dict__.update(state)
        else:
            object.__setattr__(self, "_state", state)

    def __repr__(self) -> str:
        return f"<not imported: {self.pickled_as}>"


_stand_ins: dict[str, type[StandIn]] = {}


def stand_in(module: str, name: str) -> type[StandIn]:
    """The stand-in type for ``module.name`` (one per name, so equal names give the same type)."""
    key = f"{module}.{name}"
    if key not in _stand_ins:
        _stand_ins[key] = type(name if name.isidentifier() else "StandIn", (StandIn,), {"pickled_as": key})
    return _stand_ins[key]


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocols 0 and 1) without calling anything but a stand-in."""
    return cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, StandIn) else stand_in("?", "?")()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: known constructors, else stand-ins (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _DTYPES:
            return getattr(torch, name)
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        return stand_in(module, name)


Unpickler = RestrictedUnpickler  # the name torch.load's pickle_module must provide


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler` (torch's legacy format calls it)."""
    return RestrictedUnpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    import io

    return load(io.BytesIO(data), **kwargs)


def plain(obj: Any) -> Any:
    """Stand-ins as dicts (their fields, plus ``__class__`` with the pickled name), recursively."""
    if isinstance(obj, StandIn):
        fields = {k: plain(v) for k, v in vars(obj).items() if not k.startswith("_")}
        extra = {k: plain(getattr(obj, k)) for k in ("_args", "_state") if getattr(obj, k, None)}
        return {"__class__": obj.pickled_as, **fields, **extra}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def torch_load(path: Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a foreign checkpoint through the restricted unpickler."""
    import sys

    return torch.load(path, map_location=map_location, pickle_module=sys.modules[__name__], weights_only=False)
