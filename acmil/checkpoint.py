"""Checkpoints: what a trained model carries, and loading it without Lightning.

A checkpoint is a ``torch.save``d dict (Lightning's own ``.ckpt`` is one) with:

- ``state_dict``: the model's weights, keys prefixed ``model.`` (as the LightningModule holds them);
- ``acmil``: a :class:`ModelCard` as a dict: architecture name and arguments, feature width, class
  names (the label map, in index order) and the encoder provenance of the training features.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain data only, nothing in the
file can run. That is all a ``.ckpt`` of ``acmil train`` holds, Lightning's own entries included
(``hyper_parameters``, ``loops``, ``callbacks`` states, optimizer and scheduler states: dicts, lists,
numbers, strings and tensors, i.e. ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
storages), so no global needs allowing; anything else is refused by name. Every problem with a file is one
``ValueError`` that names the file and the problem.

The service, the analyses and ``acmil predict`` only need :func:`load_model`.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acmil.atomic import save_torch
from acmil.models import MODELS, create_model

CARD_KEY = "acmil"
STATE_PREFIX = "model."
CARD_VERSION = 1
MAX_DIM = 65_536  # feature widths, hidden widths, branches: anything above is a broken or hostile card
MAX_CLASSES = 10_000


@dataclass
class ModelCard:
    """Everything needed to rebuild and describe a trained model."""

    arch: str
    arch_args: dict[str, Any]
    in_dim: int
    class_names: list[str]
    encoder: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class LoadedModel:
    """A model in eval mode with its card."""

    model: nn.Module
    card: ModelCard
    path: Path | None = None

    @property
    def temperature(self) -> float:
        """Temperature scaling of the logits fitted by ``acmil calibrate`` (card.extra; 1.0 when none)."""
        return float(self.card.extra.get("temperature", 1.0))


def build_model(card: ModelCard) -> nn.Module:
    return create_model(card.arch, in_dim=card.in_dim, n_classes=card.n_classes, **card.arch_args)


def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pure model's weights out of a checkpoint state dict (strips the ``model.`` prefix)."""
    return {k[len(STATE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(STATE_PREFIX)}


def save_model(path: str | os.PathLike, model: nn.Module, card: ModelCard) -> Path:
    """Write a checkpoint that :func:`load_model` (and the service) read, atomically."""
    payload = {
        "state_dict": {STATE_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()},
        CARD_KEY: asdict(card),
    }
    return save_torch(path, payload)  # a full disk names the file instead of torch's 'basic_ios::clear'


# First bytes of files people pass by mistake, and what to call them.
_MAGIC = (
    (b"II*\x00", "a TIFF image (a slide?)"),
    (b"MM\x00*", "a TIFF image (a slide?)"),
    (b"II+\x00", "a BigTIFF image (a slide?)"),
    (b"MM\x00+", "a BigTIFF image (a slide?)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a feature file?)"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip format; the legacy format starts with a pickle


def _what_is(head: bytes) -> str | None:
    """What a file that torch.save did not write looks like, or None if it may be a checkpoint."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if any(head.startswith(m) for m in _TORCH_MAGIC):
        return None
    return "not a file written by torch.save"


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; a clear ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ValueError(f"{path}: not a checkpoint (an empty file)")
    what = _what_is(head)
    if what is not None:
        raise ValueError(
            f"{path}: not a checkpoint ({what}); give the .ckpt that acmil train or import-checkpoint wrote"
        )
    if head.startswith(b"PK"):
        try:  # torch reads a zip cut short with "[Errno 22] Invalid argument": say what it is
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise ValueError(f"{path}: cannot read checkpoint (truncated or damaged: {err})") from err
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        name = re.search(r"GLOBAL ([\w.]+)", str(err)) or re.search(r"global:? ([\w.]+)", str(err))
        named = f" ({name.group(1)})" if name else ""
        raise ValueError(
            f"{path}: refused: the file holds objects other than tensors and plain data{named}; nothing in it "
            "was run. A checkpoint of the reference ACMIL code converts with acmil import-checkpoint"
        ) from err
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "central directory" in reason or isinstance(err, EOFError) or "ran out of input" in reason.lower():
            reason = f"truncated or damaged: {reason}"
        raise ValueError(f"{path}: cannot read checkpoint ({reason})") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a checkpoint (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


def _plausible_int(value: Any, what: str, path: Any, low: int = 1, high: int = MAX_DIM) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}: {what} {value!r} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{path}: {what} {value} is implausible (expected {low}..{high})")


def read_card(checkpoint: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> ModelCard:
    """The checkpoint's model card, checked field by field (names, types, plausible sizes, known arch)."""
    card = checkpoint.get(CARD_KEY)
    if card is None:
        raise ValueError(
            f"{path}: not an acmil checkpoint (no '{CARD_KEY}' model card); a checkpoint of the reference "
            "ACMIL code converts with acmil import-checkpoint"
        )
    if not isinstance(card, dict):
        raise ValueError(f"{path}: the model card is a {type(card).__name__}, not a mapping")
    known = [f.name for f in fields(ModelCard)]
    unknown = sorted(str(k) for k in card if k not in known)
    if unknown:
        raise ValueError(f"{path}: the model card has unknown field(s) {unknown} (known: {', '.join(known)})")
    missing = [k for k in ("arch", "arch_args", "in_dim", "class_names") if k not in card]
    if missing:
        raise ValueError(f"{path}: the model card lacks {missing}")
    version = card.get("card_version", CARD_VERSION)
    _plausible_int(version, "card_version", path, 1, 1_000)
    if version > CARD_VERSION:
        raise ValueError(f"{path}: model card version {version} is newer than this acmil reads ({CARD_VERSION})")
    arch = card["arch"]
    if not isinstance(arch, str) or arch.lower() not in MODELS:
        raise ValueError(f"{path}: unknown architecture {arch!r} (known: {', '.join(sorted(MODELS))})")
    _plausible_int(card["in_dim"], "in_dim", path)
    names = card["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: class_names must be a list of strings, got {names!r:.80}")
    if not 1 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"{path}: {len(names)} class names is implausible (expected 1..{MAX_CLASSES})")
    for key in ("arch_args", "encoder", "extra"):
        if not isinstance(card.get(key, {}), dict):
            raise ValueError(f"{path}: model card field {key} must be a mapping, got {type(card[key]).__name__}")
    for key, value in card["arch_args"].items():
        if isinstance(value, int) and not isinstance(value, bool):
            _plausible_int(value, f"arch_args.{key}", path, 0, MAX_DIM)
    return ModelCard(**card)


def _check_weights(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    """The weights in the file fit the model the card describes (names and shapes), before any copy."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} is {tuple(state[k].shape)} in the file but {expected[k]} for the card"
        for k in sorted(set(expected) & set(state))
        if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != expected[k]
    ]
    problems = [f"missing {missing[:5]}"] if missing else []
    problems += ([f"unexpected {unexpected[:5]}"] if unexpected else []) + wrong[:3]
    if problems:
        raise ValueError(f"{path}: the weights do not match the model card: {'; '.join(problems)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: the weights hold NaN or inf ({bad[:3]})")


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint written by training or ``acmil import-checkpoint``; the model is in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: anything wrong with the file, with its name and the problem.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    card = read_card(checkpoint, path)
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: no 'state_dict' (the model's weights) in the checkpoint")
    try:
        with torch.device("meta"):  # the card's model without memory, to check it before building it
            skeleton = build_model(card)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the model card does not build a {card.arch!r} model ({err})") from err
    state = model_state(state_dict)
    _check_weights(skeleton, state, path)
    model = build_model(card)
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(model=model, card=card, path=path)
