"""Generated slides and fast preprocessing settings for the preprocessing, job and core tests."""

from __future__ import annotations

from pathlib import Path

# resnet18 with seeded random weights on 64 px tiles at 2 µm/px, fed as they are: fast and deterministic.
FAST_PREPROCESS = [
    "--encoder",
    "resnet18",
    "--weights",
    "random",
    "--resize",
    "none",
    "--tile-size",
    "64",
    "--target-mpp",
    "2.0",
    "--batch-size",
    "16",
    "--no-progress",
]
# The same with one slide worker: the ``recipe_run`` fixture's and the recipe tests' settings.
FAST = [*FAST_PREPROCESS, "--workers", "1"]
CLASSES = ["normal", "tumour"]


def make_slide(path: Path, seed: int = 1, width: int = 1536, height: int = 1024, tumour: bool = True) -> Path:
    """A tiled pyramidal TIFF with a resolution tag (0.5 µm/px) that OpenSlide opens."""
    from acmil.synthetic.slides import generate_slide

    path.parent.mkdir(parents=True, exist_ok=True)
    generate_slide(path, path.with_suffix(".mask.png"), tumour, seed, width, height, 0.5)
    path.with_suffix(".mask.png").unlink()
    return path


def make_checkpoint(path: Path, recipe: dict, seed: int = 0) -> Path:
    """An untrained ACMIL whose card carries ``recipe`` (predictions need not be good, only computed)."""
    import torch

    from acmil.checkpoint import ModelCard, save_model
    from acmil.models import ACMIL

    torch.manual_seed(seed)
    dim = int(recipe["feature_dim"])
    model = ACMIL(dim, len(CLASSES), n_branches=2, top_k=4, mask_ratio=0.5)
    card = ModelCard(
        arch="acmil",
        arch_args={"n_branches": 2, "top_k": 4, "mask_ratio": 0.5},
        in_dim=dim,
        class_names=list(CLASSES),
        encoder=recipe,
    )
    return save_model(path, model.eval(), card)
