"""The :class:`Encoder` preprocessing runs: a model, the exact transform its recipe fixes, and provenance.

``load_encoder(name, weights)``:

- ``name``: a registered recipe (``acmil weights list``: uni_v1, virchow2, kaiko_vits16, resnet50_trunc,
  efficientnet_lite0 ...) or any timm model name (``resnet18``, ``vit_small_patch16_224`` ...).
- ``weights``: ``"pretrained"`` (see ``resolve.py``: the local store, a packaged file, the Hugging Face cache, and
  the network only when it answers), ``"random"`` (seeded init, recorded as ``random``), or a file / hub snapshot
  folder. A recipe's file is loaded with ``strict=True`` into the model as its checkpoint was saved.

The transform. Recipes: the tile readers deliver tiles of ``--tile-size`` at ``--target-mpp``; the encoder then
applies the recipe's transform on the device with torchvision's semantics on float [0, 1] data: resize (shorter
side, antialiased, the recipe's interpolation), centre crop, normalise. Plain timm names keep the cheaper path:
the reader resizes to the model's input size (OpenCV area) and the encoder only normalises. Either is recorded in
every feature file (``transform``, and ``encoder_recipe`` for recipes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import resolve, weights
from .build import build, load_checkpoint, read_state_dict
from .errors import EncoderError
from .recipes import IMAGENET, Recipe, Transform, get_recipe

IMAGENET_MEAN, IMAGENET_STD = IMAGENET


@dataclass
class Encoder:
    """A feature extractor: ``model`` maps (B, 3, S, S) normalised float to (B, dim)."""

    name: str
    model: nn.Module
    dim: int
    input_size: int | None  # side the READER resizes tiles to; None = tiles as they are (recipes resize here)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str | dict  # "random" or {"source": ..., "sha256": ...}
    extra: dict = field(default_factory=dict)
    recipe: Recipe | None = None
    transform: Transform | None = None  # the recipe's (after --resize / --norm overrides)

    def transform_record(self) -> dict:
        if self.transform is not None:
            t = self.transform
            return {
                "resize": t.resize or None,
                "crop": t.crop or None,
                "interpolation": f"{t.interpolation} (torchvision semantics on float [0, 1], antialiased), "
                "applied by the encoder to the tiles the reader delivers at --tile-size",
                "mean": list(t.mean),
                "std": list(t.std),
                "layout": "RGB, scaled to [0, 1] before resizing",
            }
        return {
            "resize": self.input_size,
            "interpolation": "area (OpenCV INTER_AREA) when shrinking, bilinear when enlarging; done by the tile "
            "reader in one step from the pyramid level read",
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": "RGB, scaled to [0, 1] before normalisation",
        }

    def weights_record(self) -> str:
        return self.weights if isinstance(self.weights, str) else json.dumps(self.weights, sort_keys=True)

    def recipe_record(self) -> str:
        """JSON provenance of the recipe (name, constructor + args, transform, pooling, precision, licence, weights
        source); for a plain timm name the equivalent facts timm gives."""
        if self.recipe is not None:
            rec = self.recipe.record()
            rec["transform"] = self.transform_record()
        else:
            rec = {
                "name": self.name,
                "backend": "timm",
                "constructor": f"timm:{self.extra.get('timm_arch')}",
                "kwargs": {"num_classes": 0},
                "dim": self.dim,
                "pooling": "model",
                "transform": self.transform_record(),
                "licence": self.extra.get("licence"),
                "weights": {"repo": self.extra.get("hf_hub_id")},
            }
        return json.dumps(rec, sort_keys=True)

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) on any device -> float (B, 3, S, S), channels-last, normalised."""
        if self.transform is not None:
            return apply_transform(tiles, self.transform).contiguous(memory_format=torch.channels_last)
        x = tiles.permute(0, 3, 1, 2).float()  # (B, 3, H, W), channels-last strides
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        # (x / 255 - mean) / std as one multiply-add, in place
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], device=x.device).view(1, 3, 1, 1)
        shift = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        shift = torch.tensor(shift, device=x.device).view(1, 3, 1, 1)
        return x.mul_(scale).add_(shift).contiguous(memory_format=torch.channels_last)


def apply_transform(tiles: torch.Tensor, t: Transform) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, crop, crop): ToDtype(scale) -> Resize -> CenterCrop -> Normalize, the same
    operations torchvision.transforms.v2 performs on a float tensor."""
    x = tiles.permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)  # as torchvision ToDtype(scale=True)
    h, w = x.shape[-2:]
    if t.resize and min(h, w) != t.resize:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(t.resize * long / short)
        size = (t.resize, new_long) if h <= w else (new_long, t.resize)
        x = F.interpolate(x, size=size, mode=t.interpolation, align_corners=False, antialias=True)
    if t.crop:
        h, w = x.shape[-2:]
        top, left = int(round((h - t.crop) / 2.0)), int(round((w - t.crop) / 2.0))
        x = x[..., top : top + t.crop, left : left + t.crop]
    mean = torch.tensor(t.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(t.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def _state_digest(model: nn.Module) -> str:
    """sha256 over the model's tensors (names and bytes): identifies the weights whatever file they came from."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _weights_path(weights_arg: str, recipe: Recipe | None) -> Path:
    path = Path(weights_arg).expanduser().resolve()
    if path.is_dir():
        return weights._pick_file(path, recipe)
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found (--weights takes 'pretrained', 'random' or a file)")
    return path


def _override(t: Transform, resize: str | int, norm: str) -> Transform:
    if resize == "none":
        t = replace(t, resize=0, crop=0)
    elif resize != "model":
        t = replace(t, resize=int(resize), crop=int(resize))
    if norm == "imagenet":
        t = replace(t, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return t


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block only; the caller's random state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def _hub_progress_bars_off() -> Iterator[None]:
    """No Hugging Face download bars inside the block (they garble the tile progress); the previous setting
    comes back after, and the process environment is left alone."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _load_recipe(recipe: Recipe, weights_arg: str, device) -> tuple[nn.Module, str | dict]:
    if weights_arg == "random":
        with _seeded(0):  # reproducible "random" features (resume compares runs)
            return build(recipe, "meta" if torch.device(device).type == "meta" else "cpu"), "random"
    if weights_arg == "pretrained":
        path, record = resolve.locate(recipe.name, recipe, recipe.arch)
    else:
        path = _weights_path(weights_arg, recipe)
        record = {"source": "file", "file": path.name, "file_sha256": weights.sha256_file(path)}
    record = {**record, "recipe": recipe.name}
    if recipe.weights.key_map == "by_position":
        record["remapped_by_position"] = True
    return load_checkpoint(recipe, path), record


def _load_timm(name: str, weights_arg: str):
    import timm

    if not timm.is_model(name):
        base = name.split(".")[0]
        close = timm.list_models(f"*{base[:6]}*")[:8]
        hint = f"; similar timm names: {', '.join(close)}" if close else ""
        raise EncoderError(f"unknown encoder '{name}': not a recipe (acmil weights list) nor a timm model{hint}")
    if weights_arg == "random":
        with _seeded(0):
            return timm.create_model(name, pretrained=False), "random"
    if weights_arg == "pretrained":
        path, record = resolve.locate(name, None, name)
        if path is None:  # online, plain timm name: timm downloads into the Hugging Face cache
            try:
                model = timm.create_model(name, pretrained=True)
            except (OSError, RuntimeError, ValueError) as err:
                raise EncoderError(f"cannot download timm's pretrained weights for '{name}': {err}") from err
            cfg = model.pretrained_cfg
            return model, {
                "source": "timm",
                "tag": f"{cfg.get('architecture')}.{cfg.get('tag')}",
                "hf_hub_id": cfg.get("hf_hub_id") or cfg.get("url"),
            }
    else:
        path = _weights_path(weights_arg, None)
        record = {"source": "file", "file": path.name, "file_sha256": weights.sha256_file(path)}
    model = timm.create_model(name, pretrained=False)
    record.update(_load_timm_file(model, path))
    return model, record


def _load_timm_file(model: nn.Module, path: Path) -> dict:
    """A file into a plain timm model (classifier tensors of another size skipped; same tensors under other names
    mapped by position)."""
    sd = read_state_dict(path)
    target = model.state_dict()
    head = model.pretrained_cfg.get("classifier", "fc")
    heads = (head,) if isinstance(head, str) else tuple(head)

    def is_head(k: str) -> bool:
        return any(k == h or k.startswith(h + ".") for h in heads)

    info: dict = {}
    missing = [k for k in target if k not in sd and not is_head(k)]
    same = len(sd) == len(target) and all(a.shape == b.shape for a, b in zip(sd.values(), target.values(), strict=True))
    if missing and same:
        sd = dict(zip(target.keys(), sd.values(), strict=True))
        info["remapped_by_position"] = True
        missing = []
    if missing:
        raise EncoderError(
            f"{path}: weights do not fit timm model '{model.pretrained_cfg.get('architecture', '?')}': "
            f"{len(missing)} tensors missing (first: {', '.join(missing[:3])})"
        )
    sd = {k: v for k, v in sd.items() if k in target and not (is_head(k) and v.shape != target[k].shape)}
    bad = [k for k, v in sd.items() if v.shape != target[k].shape]
    if bad:
        raise EncoderError(f"{path}: tensor shapes differ from the model for {', '.join(bad[:3])}")
    model.load_state_dict(sd, strict=False)
    return info


def load_encoder(
    name: str,
    weights: str = "pretrained",
    resize: str | int = "model",
    norm: str = "model",
    device: str | torch.device = "cpu",
) -> Encoder:
    """Build an encoder (see the module docstring); ``resize``/``norm`` override a recipe's transform or a timm
    model's input size / mean-std ("model" keeps them)."""
    import timm

    recipe = get_recipe(name)
    try:
        with _hub_progress_bars_off():
            if recipe is not None:
                model, record = _load_recipe(recipe, weights, device)
            else:
                model, record = _load_timm(name, weights)
                model.reset_classifier(0)
    except EncoderError:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        raise EncoderError(f"cannot build encoder '{name}' with weights {weights!r}: {err}") from err
    if isinstance(record, dict):
        record["sha256"] = _state_digest(model)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    if recipe is not None:
        t = _override(recipe.transform, resize, norm)
        side = t.crop or t.resize or 224
        with torch.inference_mode():
            dim = int(model(torch.zeros(1, 3, side, side, device=device)).shape[-1])
        if dim != recipe.dim:
            raise EncoderError(f"recipe '{name}' gives {dim}-d features, the recipe says {recipe.dim}")
        return Encoder(name, model, dim, None, t.mean, t.std, record, {"timm_arch": recipe.arch}, recipe, t)
    data_cfg = timm.data.resolve_model_data_config(model)
    size = data_cfg["input_size"][-1] if resize == "model" else (None if resize == "none" else int(resize))
    mean, std = (tuple(data_cfg["mean"]), tuple(data_cfg["std"])) if norm == "model" else (IMAGENET_MEAN, IMAGENET_STD)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, size or 224, size or 224, device=device)
        dim = int(model(probe).shape[-1])
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    extra = {"timm_arch": name, "hf_hub_id": cfg.get("hf_hub_id"), "licence": cfg.get("license")}
    return Encoder(name, model, dim, size, mean, std, record, extra)
