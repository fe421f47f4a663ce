"""Pydantic response models of the REST API (they make up the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = "ok"
    model_loaded: bool
    slides: int = Field(description="slides with a feature file")
    version: str


class ModelMember(BaseModel):
    checkpoint: str = Field(description="checkpoint file name")
    arch: str
    n_branches: int
    temperature: float


class ModelInfo(BaseModel):
    """The model, or an ensemble's shared recipe, classes and feature width (arch and the rest: its first
    member's; each member in ``members``)."""

    arch: str
    arch_args: dict[str, Any]
    n_branches: int = Field(description="attention branches M (1 for single-attention models)")
    class_names: list[str]
    in_dim: int = Field(description="feature width D the model expects")
    encoder: dict[str, Any] = Field(description="encoder provenance of the training features")
    target_mpp: float | None = Field(None, description="µm/px of the tiles the encoder saw")
    target_magnification: float | None = None
    tile_size: int | None = Field(None, description="tile side in pixels at the target resolution")
    checkpoint: str = Field(description="checkpoint file name (of an ensemble: its first member's)")
    temperature: float = Field(1.0, description="temperature dividing the logits (acmil calibrate; 1: none)")
    ensemble_size: int = Field(1, description="models K whose probabilities are averaged (1: a single model)")
    members: list[ModelMember] = Field(default_factory=list, description="each model, in ?model=k order")
    training_cohort: dict[str, Any] | None = Field(
        None, description="what the model was trained on: n_slides, classes (slides per class), encoder, description"
    )


class SlideSummary(BaseModel):
    slide_id: str
    has_image: bool = Field(description="whether a slide image matched the feature file")
    n_tiles: int | None = None
    error: str | None = Field(None, description="why the feature file cannot be used, if it cannot")


class SlideMetadata(BaseModel):
    slide_id: str
    has_image: bool
    width: int | None = Field(
        description="level-0 width in pixels; None when unknown (no image, no level0_width, tile size unknown)"
    )
    height: int | None
    mpp: float | None = Field(None, description="µm per level-0 pixel; None when unknown")
    n_tiles: int
    feature_dim: int
    patch_size_level0: int | None = Field(description="None when unknown: one tile and no patch_size_level0")
    vendor: str | None = None
    level_count: int | None = None
    objective_power: float | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    image_error: str | None = Field(None, description="why the slide image could not be opened, if so")
    deepzoom_tile_size: int = Field(description="tile size of slide.dzi and attention.dzi")
    deepzoom_overlap: int


class TileScore(BaseModel):
    rank: int = Field(description="1 = most attended")
    index: int = Field(description="row in the feature file")
    x: int = Field(description="level-0 x of the tile's top-left corner")
    y: int
    size: int | None = Field(description="tile side in level-0 pixels; None when unknown")
    score: float = Field(description="attention (mean over branches, softmax over tiles)")


class AttentionSummary(BaseModel):
    max: float
    top_k_mass: float = Field(description="share of the attention held by the top-k tiles")
    entropy_ratio: float = Field(description="entropy / log(N): 1 = uniform, near 0 = concentrated")


class Prediction(BaseModel):
    slide_id: str
    predicted_class: str
    predicted_index: int
    probabilities: dict[str, float]
    branch_probabilities: list[dict[str, float]] | None = None
    model_probabilities: list[dict[str, float]] | None = Field(
        None, description="ensembles: each member's probabilities (``probabilities`` is their mean)"
    )
    attention_model: str = Field("mean", description='whose attention top_tiles rank: "mean" or member k')
    n_tiles: int
    patch_size_level0: int | None = Field(description="None when unknown: the attention is then not drawn")
    top_tiles: list[TileScore]
    attention: AttentionSummary
    cached: bool = Field(description="served from the per-slide cache")
    elapsed_ms: float


class Attention(BaseModel):
    slide_id: str
    branch: str = Field(description='"mean" or the branch index')
    model: str = Field("mean", description='ensembles: "mean" of the members or member k')
    n_models: int = Field(1, description="ensemble members K (1: a single model)")
    n_branches: int
    patch_size_level0: int
    coords: list[list[int]] = Field(description="(N, 2) level-0 (x, y) of each tile")
    scores: list[float] = Field(description="(N,) attention per tile")


class UploadPrediction(Prediction):
    coords: list[list[int]]
    scores: list[float] = Field(description="(N,) mean attention per tile")
