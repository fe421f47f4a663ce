"""Model and prediction routes: health, model card, per-slide prediction, attention, heatmap, upload."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response

from acmil import __version__
from acmil.heatmap import DEFAULT_CMAP, DEFAULT_NORMALISATION, DEFAULT_SMOOTHING

from ..dependencies import BranchDep, EngineDep, ModelDep, SettingsDep, SlideDep
from ..engine import Engine, SlidePrediction
from ..errors import BadInput, TooLarge
from ..schemas import (
    Attention,
    AttentionSummary,
    Health,
    ModelInfo,
    ModelMember,
    Prediction,
    TileScore,
    UploadPrediction,
)
from ..uploads import decode_upload, limits_for, upload_stem

router = APIRouter(tags=["predictions"])
COPY_CHUNK = 1024 * 1024


@router.get("/health", response_model=Health)
def health(engine: EngineDep) -> Health:
    return Health(model_loaded=engine.loaded is not None, slides=len(engine.registry), version=__version__)


@router.get("/model", response_model=ModelInfo)
def model_info(engine: EngineDep) -> ModelInfo:
    """Classes, architecture, feature width and the provenance of the features it was trained on; of an
    ensemble, the recipe its members share and each member."""
    card = engine.loaded.card
    members = [
        ModelMember(
            checkpoint=m.path.name if m.path else "",
            arch=m.card.arch,
            n_branches=int(getattr(m.model, "n_branches", 1)),
            temperature=m.temperature,
        )
        for m in engine.ensemble.members
    ]
    encoder = dict(card.encoder)
    extra = dict(card.extra)

    def pick(*names: str) -> float | None:
        for source in (encoder, extra):
            for name in names:
                if source.get(name) is not None:
                    return float(source[name])
        return None

    tile = pick("patch_size", "tile_size")
    return ModelInfo(
        arch=card.arch,
        arch_args=card.arch_args,
        n_branches=int(getattr(engine.loaded.model, "n_branches", 1)),
        class_names=card.class_names,
        in_dim=card.in_dim,
        encoder=encoder,
        target_mpp=pick("mpp_target", "target_mpp"),
        target_magnification=pick("target_magnification"),
        tile_size=int(tile) if tile is not None else None,
        checkpoint=engine.loaded.path.name if engine.loaded.path else "",
        temperature=engine.loaded.temperature,
        training_cohort=extra.get("training_cohort"),
        ensemble_size=len(members),
        members=members,
    )


def build_prediction(
    engine: Engine, result: SlidePrediction, cached: bool, top_k: int, model: int | None = None
) -> dict:
    """The fields of :class:`Prediction` from a slide result; top tiles by ``model``'s attention (None: the
    model's, or an ensemble's mean)."""
    names = engine.loaded.card.class_names
    pred = result.prediction
    scores = result.scores(None, model)  # (N,)
    members = result.members or [pred]
    attended = pred if model is None else members[model]
    k = min(top_k, scores.size)
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    top = top[np.argsort(-scores[top], kind="stable")]
    n = scores.size
    p = np.clip(scores.astype(np.float64), 1e-30, None)
    entropy = float(-(p * np.log(p)).sum() / np.log(n)) if n > 1 else 0.0
    branches = None
    if attended.branch_probabilities is not None:
        branches = [dict(zip(names, map(float, row), strict=True)) for row in attended.branch_probabilities]
    per_model = None
    if len(members) > 1:
        per_model = [dict(zip(names, map(float, m.probabilities), strict=True)) for m in members]
    return {
        "slide_id": result.slide_id,
        "predicted_class": names[pred.predicted],
        "predicted_index": pred.predicted,
        "probabilities": dict(zip(names, map(float, pred.probabilities), strict=True)),
        "branch_probabilities": branches,
        "model_probabilities": per_model,
        "attention_model": "mean" if model is None else str(model),
        "n_tiles": n,
        "patch_size_level0": result.patch_size_level0,
        "top_tiles": [
            TileScore(
                rank=i + 1,
                index=int(j),
                x=int(result.coords[j, 0]),
                y=int(result.coords[j, 1]),
                size=result.patch_size_level0,
                score=float(scores[j]),
            )
            for i, j in enumerate(top)
        ],
        "attention": AttentionSummary(
            max=float(scores.max()), top_k_mass=float(scores[top].sum()), entropy_ratio=min(entropy, 1.0)
        ),
        "cached": cached,
        "elapsed_ms": result.elapsed_ms,
    }


TopK = Annotated[int | None, Query(ge=1, le=1000, description="top-attended tiles to list")]


@router.get("/slides/{slide_id}/prediction", response_model=Prediction)
def prediction(
    slide: SlideDep, engine: EngineDep, settings: SettingsDep, model: ModelDep, top_k: TopK = None
) -> Prediction:
    """Class probabilities, the predicted class and the top-attended tiles (cached per feature file).

    Of an ensemble: the members' mean probabilities, each member's, and top tiles by the members' mean
    attention or by member ``model=k``'s.
    """
    result, cached = engine.predict(slide)
    return Prediction(**build_prediction(engine, result, cached, top_k or settings.default_top_k, model))


@router.get("/slides/{slide_id}/attention", response_model=Attention)
def attention(slide: SlideDep, engine: EngineDep, branch: BranchDep, model: ModelDep) -> Attention:
    """Every tile's coords and attention: the mean over branches, or ``branch=i``; of an ensemble, the mean
    of its members' or member ``model=k``'s (422 when the tile size is unknown)."""
    result, _ = engine.predict(slide)
    patch, _ = result.geometry()
    scores = result.scores(branch, model)
    members = result.members or [result.prediction]
    return Attention(
        slide_id=slide.slide_id,
        branch="mean" if branch is None else str(branch),
        model="mean" if model is None else str(model),
        n_models=len(members),
        n_branches=int((result.prediction if model is None else members[model]).attention.shape[0]),
        patch_size_level0=patch,
        coords=result.coords.tolist(),
        scores=scores.astype(float).tolist(),
    )


@router.get("/slides/{slide_id}/heatmap.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def heatmap(
    slide: SlideDep,
    engine: EngineDep,
    branch: BranchDep,
    model: ModelDep,
    normalisation: Annotated[str, Query(pattern="^(log|rank|percentile|minmax)$")] = DEFAULT_NORMALISATION,
    colormap: Annotated[str, Query(max_length=64)] = DEFAULT_CMAP,
    alpha: Annotated[float, Query(ge=0.0, le=1.0)] = 0.5,
    smoothing: Annotated[float, Query(ge=0.0, le=20.0, description="Gaussian sigma in tiles")] = DEFAULT_SMOOTHING,
    max_size: Annotated[int, Query(ge=16, le=4096, description="longest side in pixels")] = 2048,
) -> Response:
    """The attention heatmap over the slide thumbnail (blank canvas without an image), as PNG."""
    png = engine.heatmap_png(
        slide,
        branch,
        model,
        max_size=max_size,
        cmap=colormap,
        alpha=alpha,
        smoothing_sigma=smoothing,
        normalisation=normalisation,
    )
    return Response(png, media_type="image/png")


@router.get("/colormap.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def colormap_png(name: Annotated[str, Query(max_length=64)] = "jet") -> Response:
    """A 256x1 strip of a matplotlib colormap (the viewer's legend)."""
    from PIL import Image

    from acmil.heatmap import colormap_lut

    try:
        lut = colormap_lut(name)
    except ValueError as err:
        raise BadInput(str(err)) from err
    buffer = io.BytesIO()
    Image.fromarray(lut[None, :, :], mode="RGB").save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=86400"})


@router.post("/predict", response_model=UploadPrediction)
def predict_upload(
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a feature file (.h5, format 1 or CLAM/TRIDENT)")],
    top_k: TopK = None,
) -> UploadPrediction:
    """Predict an uploaded feature file: the same prediction and attention as for a served slide.

    Refused (422) before any data is read when the file's metadata declares another width than the
    model's, more tiles than ``max_upload_tiles`` or more decoded bytes than ``max_upload_feature_bytes``;
    503 when ``max_concurrent_uploads`` uploads are being decoded already.
    """
    name = Path(file.filename or "upload.h5").name[:255]
    limits = limits_for(settings, engine.loaded.card.in_dim)
    with tempfile.TemporaryDirectory(prefix="acmil-upload-") as tmp:
        path = Path(tmp) / f"{upload_stem(name)}.h5"
        with path.open("wb") as out:
            copied = 0
            while chunk := file.file.read(COPY_CHUNK):
                copied += len(chunk)
                if copied > settings.max_upload_bytes:
                    raise TooLarge(f"upload larger than the limit of {settings.max_upload_bytes} bytes")
                out.write(chunk)
        with engine.upload_slots.hold():
            feats = decode_upload(path, name, limits)
            result = engine.predict_features(feats)
            del feats
    fields = build_prediction(engine, result, False, top_k or settings.default_top_k)
    return UploadPrediction(
        **fields, coords=result.coords.tolist(), scores=result.prediction.mean_attention.astype(float).tolist()
    )
