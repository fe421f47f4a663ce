"""``acmil predict --checkpoint CKPT --slides DIR|FILES|CSV --out OUT``: raw slides in, predictions out.

Each slide is preprocessed with the checkpoint's recipe (:func:`acmil.preprocessing.api.preprocess_slide`)
into a cache ``OUT/cache/<recipe_hash>/<content_hash>/features/<slide_id>.h5`` keyed by the slide's content
and the recipe, so a rerun is instant; then ``OUT/predictions.csv`` and ``OUT/heatmaps/<slide_id>.png``.
One bad slide fails alone (a line on stderr, a row in ``OUT/failures.csv``, exit code 1).

Several checkpoints of one recipe (:mod:`acmil.ensemble`) predict their mean probabilities; each member's
attention is written too: ``OUT/heatmaps/<slide_id>_model<k>.png`` and ``OUT/attention/<slide_id>.geojson``
(QuPath measurements ``attention``, the members' mean, and ``attention_model_<k>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acmil.atomic import atomic_path, write_csv
from acmil.checkpoint import LoadedModel
from acmil.ensemble import Ensemble, load_ensemble
from acmil.features import SlideFeatures, read_features
from acmil.inference import BagPrediction
from acmil.recipe import recipe_hash

CHUNK = 4 * 1024 * 1024


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex): the identity of a slide whatever its name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def cached_features(
    slide: Path,
    slide_id: str,
    recipe: dict,
    cache_root: Path,
    encoder_factory: Callable,
    progress=None,  # noqa: ANN001
    digest: str | None = None,
    workers: int = 1,
) -> Path:
    """The slide's feature file under ``cache_root``, made with ``recipe`` unless already there."""
    digest = digest or content_hash(slide)
    folder = cache_root / recipe.get("recipe_hash", recipe_hash(recipe)) / digest[:20]
    final = folder / "features" / f"{slide_id}.h5"
    if final.is_file():
        return final
    from acmil.preprocessing.api import preprocess_slide

    return preprocess_slide(
        slide, recipe, folder, progress=progress, encoder=encoder_factory(), slide_id=slide_id, workers=workers
    )


def write_heatmap(features: Path | SlideFeatures, prediction: BagPrediction | np.ndarray, target: Path) -> Path:
    """The heatmap of one slide on a white canvas, written atomically: of a prediction's mean attention, or
    of scores (N,) (an ensemble member's)."""
    from acmil.heatmap import render_heatmap

    feats = read_features(features) if isinstance(features, Path) else features
    scores = prediction.mean_attention if isinstance(prediction, BagPrediction) else prediction
    size0 = (int(feats.coord_attrs.get("level0_width", 0)), int(feats.coord_attrs.get("level0_height", 0)))
    if not all(size0):
        size0 = tuple(int(v) for v in feats.coords.max(axis=0) + (feats.patch_size_level0 or 1))
    image = render_heatmap(feats.coords, scores, feats.patch_size_level0 or 1, size0)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
    return target


def write_attention_geojson(feats: SlideFeatures, member_attention: np.ndarray, target: Path) -> Path:
    """An ensemble's attention per tile as QuPath GeoJSON: ``attention`` (the members' mean) and
    ``attention_model_<k>`` (member k's, over its branches); member_attention (K, N)."""
    from acmil.geojson import attention_features

    collection = attention_features(
        feats.slide_id, feats.coords, feats.patch_size_level0 or 1, member_attention, rows="model"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(collection), encoding="utf-8")
    return target


@dataclass
class SlidesPrediction:
    csv: Path
    rows: list[dict]
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # per slide: stage -> seconds


def predict_slides(
    checkpoint: str | Path | list[str | Path],
    slides: str,
    out: str | Path,
    device: str = "cpu",
    weights_file: str | None = None,
    heatmaps: bool = True,
    log: Callable[[str], None] | None = None,
    loaded: LoadedModel | Ensemble | None = None,
    per_model: bool = False,
) -> SlidesPrediction:
    """Preprocess (cached) and predict every slide of ``slides`` (a folder, a file, a comma list or a CSV).

    ``checkpoint``: one, or a list (files, run or cv directories) forming an ensemble (mean probabilities,
    per-model heatmaps and GeoJSON; ``per_model`` adds each model's probabilities as m<k>_prob_<class>).
    Raises EnsembleMismatch for checkpoints that cannot be averaged."""
    from acmil.preprocessing.api import recipe_encoder
    from acmil.preprocessing.discover import discover

    from .training.metrics import prediction_rows

    say = log or (lambda line: print(line, file=sys.stderr))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if loaded is None:
        loaded = load_ensemble(checkpoint if isinstance(checkpoint, list) else [checkpoint], map_location="cpu")
    ensemble = (loaded if isinstance(loaded, Ensemble) else Ensemble([loaded])).to(device)
    recipe, names, k_models = dict(ensemble.card.encoder), ensemble.class_names, len(ensemble.members)
    per_model = per_model and k_models > 1
    sources = [s for part in str(slides).split(",") if part for s in discover(part)]
    if not sources:
        raise FileNotFoundError(f"{slides}: no slides found")
    encoder_box: list = []

    def encoder():  # noqa: ANN202 - built once, only when a slide is not cached
        if not encoder_box:
            encoder_box.append(recipe_encoder(recipe, device, weights_file))
        return encoder_box[0]

    result = SlidesPrediction(out / "predictions.csv", [])
    for i, src in enumerate(sources, 1):
        sid, t0, stages = src.slide_id, time.perf_counter(), {}
        last = {"stage": None, "t": t0}

        def progress(stage: str, done: int, total: int, sid=sid, i=i, last=last, stages=stages) -> None:
            now = time.perf_counter()
            if last["stage"] is not None:
                stages[last["stage"]] = stages.get(last["stage"], 0.0) + now - last["t"]
            last.update(stage=stage, t=now)
            if stage != "encoding" or done == total:
                say(f"[{i}/{len(sources)}] {sid}: {stage}" + (f" {done}/{total} tiles" if total else ""))

        try:
            say(f"[{i}/{len(sources)}] {sid}: hashing")
            path = cached_features(src.path, sid, recipe, out / "cache", encoder, progress)
            progress("predicting", 0, 0)
            feats = read_features(path)
            if feats.dim != ensemble.in_dim:
                raise ValueError(f"{path}: {feats.dim}-d features, the model expects {ensemble.in_dim}-d")
            pred = ensemble.predict(feats.features)
            row = prediction_rows([sid], pred.probabilities[None], names)[0]
            if per_model:
                row |= {
                    f"m{k}_prob_{c}": f"{float(p):.6f}"
                    for k, probs in enumerate(pred.member_probabilities)
                    for c, p in zip(names, probs, strict=True)
                }
            result.rows.append(row)
            if heatmaps:
                progress("heatmap", 0, 0)
                write_heatmap(feats, pred.mean_attention, out / "heatmaps" / f"{sid}.png")
                for k, scores in enumerate(pred.member_attention if k_models > 1 else []):
                    write_heatmap(feats, scores, out / "heatmaps" / f"{sid}_model{k}.png")
            if k_models > 1:
                write_attention_geojson(feats, pred.member_attention, out / "attention" / f"{sid}.geojson")
            progress("done", 0, 0)
            stages["total"] = time.perf_counter() - t0
            result.seconds[sid] = stages
        except Exception as err:  # noqa: BLE001 - one bad slide fails alone
            message = str(err) if str(src.path) in str(err) else f"{src.path}: {err}"
            result.failures[sid] = message
            say(f"[{i}/{len(sources)}] {sid}: FAILED {message}")
    fields = ["slide_id", "predicted"] + [f"prob_{c}" for c in names]
    if per_model:
        fields += [f"m{k}_prob_{c}" for k in range(k_models) for c in names]
    write_csv(result.csv, result.rows, fields)
    if result.failures:
        write_csv(
            out / "failures.csv",
            [{"slide_id": k, "error": v} for k, v in result.failures.items()],
            ["slide_id", "error"],
        )
    return result
