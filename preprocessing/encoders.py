"""Patch encoders through timm, bundled with their transform and the identity of their weights.

``load_encoder(name, weights)``:

- ``name``: any timm model name (``resnet18``, ``resnet50.a1_in1k``, ``vit_small_patch16_224`` ...) or
  ``resnet50_trunc``: ResNet-50 up to layer3, average-pooled, 1024-d (the CLAM standard; its pretrained weights
  are timm's ``resnet50.tv_in1k``, the torchvision ImageNet weights CLAM uses).
- ``weights``: ``"pretrained"`` (timm's weights from the hub or the local cache), ``"random"`` (seeded init,
  recorded as ``random``), or a file (``.safetensors`` / ``.pth`` / ``.bin``). A file is loaded into the timm
  model (its path is also set as ``pretrained_cfg_overlay=dict(file=...)``, so the model's config records it)
  and must fill every non-classifier tensor; a checkpoint with other key names but the same tensors in the same
  order (e.g. lukemelas' EfficientNet files) is mapped by position, and this is recorded.

The transform: the tile readers resize each tile to the model's input size in one step from the pyramid level
they read (OpenCV area interpolation; cheaper than a second resize in the encoding process, which would cost
~10% of a CPU encoder's time); the encoding process turns uint8 (B, S, S, 3) into float and normalises with the
model's mean/std (timm falls back to ImageNet's) or, with ``norm="imagenet"``, ImageNet's. It is recorded in
every feature file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderError(ValueError):
    """Unknown encoder name or unusable weights; the message says what to do."""


@dataclass
class Encoder:
    """A feature extractor: ``model`` maps (B, 3, S, S) normalised float to (B, dim)."""

    name: str
    model: nn.Module
    dim: int
    input_size: int | None  # side the tiles are resized to; None = tiles as they are
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str | dict  # "random" or {"source": ..., "sha256": ...}
    extra: dict = field(default_factory=dict)

    def transform_record(self) -> dict:
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

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) on any device -> float (B, 3, S, S), channels-last, normalised.

        The pipeline's readers already deliver tiles of side S; other sizes are resized here (bilinear, antialiased).
        """
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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise EncoderError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any loader failure names the file
        raise EncoderError(f"{path}: cannot read weights ({err})") from err
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EncoderError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_weights_file(model: nn.Module, path: Path) -> dict:
    """Load a state dict into ``model`` (which still has its classifier); returns provenance details."""
    sd = _load_state_dict(path)
    target = model.state_dict()
    head = model.pretrained_cfg.get("classifier", "fc") if hasattr(model, "pretrained_cfg") else "fc"
    heads = (head,) if isinstance(head, str) else tuple(head)

    def is_head(k: str) -> bool:
        return any(k == h or k.startswith(h + ".") for h in heads)

    info: dict = {}
    missing = [k for k in target if k not in sd and not is_head(k)]
    same_shapes = len(sd) == len(target) and all(
        a.shape == b.shape for a, b in zip(sd.values(), target.values(), strict=True)
    )
    if missing and same_shapes:
        sd = dict(zip(target.keys(), sd.values(), strict=True))  # same tensors, other names: map by position
        info["remapped_by_position"] = True
        missing = []
    if missing:
        raise EncoderError(
            f"{path}: weights do not fit timm model '{model.pretrained_cfg.get('architecture', '?')}': "
            f"{len(missing)} tensors missing (e.g. {missing[:3]})"
        )
    sd = {k: v for k, v in sd.items() if k in target and not (is_head(k) and v.shape != target[k].shape)}
    bad = [k for k, v in sd.items() if v.shape != target[k].shape]
    if bad:
        raise EncoderError(f"{path}: tensor shapes differ from the model for {bad[:3]}")
    model.load_state_dict(sd, strict=False)
    return info


def _state_digest(model: nn.Module) -> str:
    """sha256 over the model's tensors (names and bytes): identifies the weights whatever file they came from."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_encoder(
    name: str,
    weights: str = "pretrained",
    resize: str | int = "model",
    norm: str = "model",
    device: str | torch.device = "cpu",
) -> Encoder:
    """Build an encoder (see the module docstring).

    Args:
        name: timm model name or ``resnet50_trunc``.
        weights: "pretrained", "random" or a weights file path.
        resize: "model" (the model's input size), "none" (tiles as they are) or an integer side.
        norm: "model" (the model's mean/std) or "imagenet".
        device: where the model lives.
    """
    import timm

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    trunc = name.split(".")[0] == "resnet50_trunc"
    arch = ("resnet50" + (name[len("resnet50_trunc") :] or ".tv_in1k")) if trunc else name
    if not timm.is_model(arch):
        base = arch.split(".")[0]
        close = timm.list_models(f"*{base[:6]}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise EncoderError(f"unknown encoder '{name}': timm has no such model (or resnet50_trunc){hint}")
    record: str | dict
    try:
        if weights == "random":
            torch.manual_seed(0)  # reproducible "random" features (resume compares runs)
            model = timm.create_model(arch, pretrained=False)
            record = "random"
        elif weights == "pretrained":
            model = timm.create_model(arch, pretrained=True)
            cfg = model.pretrained_cfg
            record = {
                "source": "timm",
                "tag": f"{cfg.get('architecture')}.{cfg.get('tag')}",
                "hf_hub_id": cfg.get("hf_hub_id") or cfg.get("url"),
            }
        else:
            path = Path(weights).expanduser().resolve()
            if not path.is_file():
                raise EncoderError(f"{path}: weights file not found (--weights takes 'pretrained', 'random' or a file)")
            model = timm.create_model(arch, pretrained=False, pretrained_cfg_overlay={"file": str(path)})
            record = {
                "source": "file",
                "file": path.name,
                "file_sha256": _sha256_file(path),
                **_load_weights_file(model, path),
            }
    except EncoderError:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        if weights != "pretrained":
            raise EncoderError(f"cannot build encoder '{name}' with weights {weights!r}: {err}") from err
        raise EncoderError(
            f"cannot get timm's pretrained weights for '{arch}' ({type(err).__name__}: {str(err)[:160]}). Offline? "
            "Download them where there is internet (e.g. model.safetensors from "
            f"huggingface.co/timm/{arch.split('.')[0]}, or `timm.create_model(..., pretrained=True)` there, then "
            "copy ~/.cache/huggingface), and pass --weights FILE; or --weights random for a pipeline test"
        ) from err
    model.reset_classifier(0)
    if trunc:
        model.layer4 = nn.Identity()  # layer3 (1024 channels) -> global average pool, as CLAM
    if isinstance(record, dict):
        record["sha256"] = _state_digest(model)
    data_cfg = timm.data.resolve_model_data_config(model)
    size = data_cfg["input_size"][-1] if resize == "model" else (None if resize == "none" else int(resize))
    mean, std = (tuple(data_cfg["mean"]), tuple(data_cfg["std"])) if norm == "model" else (IMAGENET_MEAN, IMAGENET_STD)
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, size or 224, size or 224, device=device)
        dim = int(model(probe).shape[-1])
    return Encoder(name, model, dim, size, mean, std, record, {"timm_arch": arch})
