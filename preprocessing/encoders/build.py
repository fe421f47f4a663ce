"""Build a recipe's model (on any device, ``meta`` included), read checkpoints, load them strictly.

The model is first built as its checkpoint was saved (with the classifier when the file has one), loaded with
``strict=True``, and only then turned into a feature extractor (classifier removed, ResNet truncated, tokens
pooled). So a checkpoint's real key layout is checked name by name and shape by shape.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from .errors import EncoderError
from .pooling import PooledEncoder
from .recipes import Recipe


def _resolve(value):
    """ "timm.layers.SwiGLUPacked" -> the class; other values unchanged (recipes stay JSON-able)."""
    if isinstance(value, str) and value.startswith(("timm.", "torch.")) and "." in value:
        module, _, attr = value.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    return value


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise EncoderError(
            "this recipe runs through Hugging Face transformers, which is not installed: "
            "pip install 'acmil[transformers]'"
        ) from err
    return transformers


def skeleton(recipe: Recipe, device: str | torch.device = "cpu", config_dir: Path | None = None) -> nn.Module:
    """The model as its checkpoint stores it (random init; on ``meta`` no memory is used)."""
    with torch.device(device):
        if recipe.backend == "transformers":
            tf = _transformers()
            if config_dir is not None and (config_dir / "config.json").is_file():
                config = tf.AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
            else:
                config = getattr(tf, recipe.arch.replace("Model", "Config"))(**recipe.kwargs)
            return tf.AutoModel.from_config(config)
        import timm

        kwargs = {k: _resolve(v) for k, v in recipe.kwargs.items()}
        return timm.create_model(recipe.arch, pretrained=False, **kwargs)


def finish(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Checkpoint-shaped model -> feature extractor (B, 3, S, S) -> (B, recipe.dim)."""
    if recipe.weights.head and hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    if recipe.truncate == "resnet_layer3":
        model.layer4 = nn.Identity()  # layer3 (1024 channels) -> global average pool, as CLAM
    if recipe.pooling != "model":
        model = PooledEncoder(model, recipe.pooling)
    return model


def build(recipe: Recipe, device: str | torch.device = "cpu") -> nn.Module:
    """Feature extractor with random weights (seeded by the caller)."""
    return finish(skeleton(recipe, device), recipe)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .bin / .pth / .torch file (a wrapping "state_dict"/"model" unwrapped,
    a "module." prefix removed)."""
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            try:  # mmap: a multi-GB file is not read into memory before it is checked
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialisation cannot be mapped
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any loader failure names the file
        raise EncoderError(f"{path}: cannot read weights ({type(err).__name__}: {str(err)[:200]})") from err
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def map_keys(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], recipe: Recipe, path: Path) -> dict:
    """The recipe's key layout -> the model's: as it is ("timm"), or by position after a shape check."""
    if recipe.weights.key_map != "by_position" or set(sd) == set(target):
        return sd
    src, dst = list(sd.items()), list(target.items())
    if len(src) != len(dst):
        raise EncoderError(
            f"{path}: {len(src)} tensors, but recipe '{recipe.name}' ({recipe.arch}) has {len(dst)}: "
            f"not a checkpoint of this model (acmil weights list shows the expected files)"
        )
    for (ks, vs), (kd, vd) in zip(src, dst, strict=True):
        if tuple(vs.shape) != tuple(vd.shape):
            raise EncoderError(
                f"{path}: tensor '{ks}' {tuple(vs.shape)} does not fit '{kd}' {tuple(vd.shape)} of recipe "
                f"'{recipe.name}': not a checkpoint of this model"
            )
    return {kd: vs for (_, vs), (kd, _) in zip(src, dst, strict=True)}


def check_layout(sd: dict[str, torch.Tensor], model: nn.Module, recipe: Recipe, path: Path) -> dict:
    """Raise unless ``sd`` fits ``model`` exactly (names and shapes); returns ``sd`` in the model's names."""
    target = model.state_dict()
    sd = map_keys(sd, target, recipe, path)
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    shapes = [
        f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
        for k, v in target.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (first: {'; '.join(shapes[:2])})")
        raise EncoderError(
            f"{path}: not a checkpoint of recipe '{recipe.name}' ({recipe.backend}:{recipe.arch}): "
            f"{'; '.join(parts)}. Check the file is {recipe.weights.where()}"
        )
    return sd


def load_transformers(recipe: Recipe, path: Path) -> nn.Module:
    """A hub snapshot folder (config.json + weights) through ``from_pretrained``, which also renames the keys of
    older checkpoints (transformers 5 calls Dinov2's ``attention.attention.query`` ``q_proj``); any missing,
    unexpected or mismatched key is an error, as with ``strict=True``."""
    tf = _transformers()
    try:
        model, info = tf.AutoModel.from_pretrained(str(path.parent), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise EncoderError(f"{path.parent}: cannot load recipe '{recipe.name}' with transformers ({err})") from err
    bad = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(bad.values()):
        parts = [f"{len(v)} {k.split('_')[0]} (first: {', '.join(map(str, v[:3]))})" for k, v in bad.items() if v]
        raise EncoderError(
            f"{path}: not a checkpoint of recipe '{recipe.name}' ({recipe.arch}): {'; '.join(parts)}. "
            f"Check the files are {recipe.weights.where()}"
        )
    return model


def load_checkpoint(recipe: Recipe, path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Feature extractor with the weights of ``path``, loaded with ``strict=True``."""
    if recipe.backend == "transformers":
        return finish(load_transformers(recipe, path).float().to(device), recipe)
    model = skeleton(recipe, "meta", config_dir=path.parent)
    sd = check_layout(read_state_dict(path), model, recipe, path)
    model.load_state_dict(sd, strict=True, assign=True)  # assign: the meta tensors become the file's
    # buffers a checkpoint does not hold (non-persistent, e.g. position ids) are still on meta: rebuild them
    for mod in model.modules():
        for name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                raise EncoderError(f"{path}: recipe '{recipe.name}' has a buffer '{name}' the file does not fill")
    return finish(model.float().to(device), recipe)
