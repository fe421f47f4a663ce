"""``acmil localisation``: does attention find the tumour? Tile-level AUC against ground-truth masks.

For each slide with a mask ``MASKS/<slide_id>.png`` (or, with ``--annotations DIR --classes Tumor``, a
QuPath GeoJSON export ``DIR/<slide_id>.geojson``: tile coverage then comes exactly from the polygons of
those classes), tiles covered at least ``--threshold`` by the mask are positives; the score is the
attention (mean over branches, and each branch). AUC is ``sklearn.metrics.roc_auc_score`` per slide.
Slides whose tiles are all one class (a normal slide, a slide without a mask) have no AUC and are listed
as skipped. Overall figures: the mean of the per-slide AUCs, and a pooled AUC over all tiles with
attention scaled by the slide's tile count (attention x N = 1 for uniform attention) so slides of
different sizes are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.command import CommandParser, as_list, command_parser, config_from

from ._common import BatchLog, iter_slides, run_model, select_slides, write_csv, write_json
from .masks import GroundTruth


def tile_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of scores (N,) for bool labels (N,); None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def localisation(
    checkpoint: str,
    features_dir: str,
    masks_dir: str | None,
    out_dir: str,
    slide_ids: Sequence[str] | None = None,
    threshold: float = 0.5,
    downsample: float | None = None,
    annotations_dir: str | None = None,
    classes: Sequence[str] = ("Tumor",),
) -> dict:
    """Per-slide and overall tile AUC of attention; writes ``localisation.csv`` and ``localisation.json``.

    Ground truth: ``masks_dir`` (PNG masks) or ``annotations_dir`` (GeoJSON, annotations of ``classes``)."""
    from acmil.checkpoint import load_model

    truth = GroundTruth(masks_dir, annotations_dir, tuple(classes), threshold, downsample)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(checkpoint)
    log = BatchLog()
    rows: list[dict] = []
    pooled_scores, pooled_labels = [], []
    for slide in iter_slides(select_slides(features_dir, slide_ids), log, lm.card.in_dim):
        try:
            labels, warnings = truth.labels(slide)
        except ValueError as err:
            log.errors[slide.slide_id] = str(err)
            continue
        log.warn(slide.slide_id, warnings)
        if labels is None:
            log.skipped[slide.slide_id] = "no mask" if masks_dir else "no annotations file"
            continue
        if labels.all() or not labels.any():
            log.skipped[slide.slide_id] = f"only one class ({'all' if labels.any() else 'no'} tumour tiles)"
            continue
        result = run_model(lm.model, slide)
        row = {
            "slide_id": slide.slide_id,
            "n_tiles": slide.n_patches,
            "n_tumour": int(labels.sum()),
            "auc_mean": tile_auc(result.mean_attention, labels),
        }
        for i, att in enumerate(result.attention if result.attention.shape[0] > 1 else []):
            row[f"auc_branch{i}"] = tile_auc(att, labels)
        rows.append(row)
        pooled_scores.append(result.mean_attention * slide.n_patches)
        pooled_labels.append(labels)
    summary: dict = {
        "checkpoint": str(checkpoint),
        "arch": lm.card.arch,
        "threshold": threshold,
        "ground_truth": truth.describe(),
        "n_slides": len(rows),
    }
    if rows:
        summary["mean_auc"] = float(np.mean([r["auc_mean"] for r in rows]))
        summary["min_auc"] = float(np.min([r["auc_mean"] for r in rows]))
        summary["pooled_auc"] = tile_auc(np.concatenate(pooled_scores), np.concatenate(pooled_labels))
        branch_keys = [k for k in rows[0] if k.startswith("auc_branch")]
        summary["mean_auc_per_branch"] = {k[4:]: float(np.mean([r[k] for r in rows])) for k in branch_keys}
    else:
        summary.update(mean_auc=None, min_auc=None, pooled_auc=None, mean_auc_per_branch={})
    summary["slides"] = rows
    summary.update(log.as_dict())
    fields = ["slide_id", "n_tiles", "n_tumour", "auc_mean"] + (
        [k for k in rows[0] if k.startswith("auc_branch")] if rows else []
    )
    write_csv(out / "localisation.csv", rows, fields)
    write_json(out / "localisation.json", summary)
    return summary


@dataclass(kw_only=True)
class LocalisationConfig:
    """``acmil localisation``'s options (a config file's keys are these names). One of ``masks`` /
    ``annotations``."""

    checkpoint: str
    features: str
    out: str
    masks: str | None = None
    annotations: str | None = None
    classes: str = "Tumor"  # comma-separated annotation classes that are tumour
    slides: list[str] | None = None  # slide ids (default: all)
    threshold: float = 0.5
    mask_downsample: float | None = None

    def __post_init__(self) -> None:  # a config file may give one value without a list
        self.slides = as_list(self.slides)


@dataclass(kw_only=True)
class LocalisationResult:
    """What ``acmil localisation`` computed and wrote.

    Attributes:
        summary: the content of ``localisation.json``: ``mean_auc``, ``min_auc``, ``pooled_auc``,
            ``mean_auc_per_branch``, the per-slide rows (``slides``), ``skipped``, ``errors``, ``warnings``.
        paths: ``localisation.csv`` and ``localisation.json``.
    """

    summary: dict[str, Any]
    paths: list[Path] = field(default_factory=list)


def run_localisation(config: LocalisationConfig) -> LocalisationResult:
    """Tile-level AUC of attention against the ground truth, written into ``config.out``."""
    from acmil.annotations import parse_classes

    summary = localisation(
        checkpoint=config.checkpoint,
        features_dir=config.features,
        masks_dir=config.masks,
        out_dir=config.out,
        slide_ids=config.slides,
        threshold=config.threshold,
        downsample=config.mask_downsample,
        annotations_dir=config.annotations,
        classes=parse_classes(config.classes),
    )
    out = Path(config.out)
    return LocalisationResult(summary=summary, paths=[out / "localisation.csv", out / "localisation.json"])


def build_parser() -> CommandParser:
    p = command_parser("acmil localisation", __doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="trained checkpoint")
    p.add_argument("--features", required=True, help="folder of <slide_id>.h5 feature files")
    truth = p.add_mutually_exclusive_group()  # one is required: checked in main, so a --config file may give it
    truth.add_argument("--masks", help="folder of <slide_id>.png tumour masks")
    truth.add_argument(
        "--annotations",
        help="folder of <slide_id>.geojson QuPath exports (FeatureCollection or a "
        "list of features): tumour = annotations of --classes",
    )
    p.add_argument(
        "--classes",
        default="Tumor",
        help="annotation classes that are tumour, comma-separated "
        "(case-insensitive; a derived class 'Tumor: Positive' matches)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--slides", nargs="+", help="slide ids to analyse (default: all)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask fraction that makes a tile tumour")
    p.add_argument("--mask-downsample", type=float, help="level-0 pixels per mask pixel (default: inferred)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = config_from(parser.parse_args(argv), LocalisationConfig)
    if not (config.masks or config.annotations):
        parser.error("one of the arguments --masks --annotations is required")
    if config.masks and config.annotations:
        parser.error("argument --annotations: not allowed with argument --masks")
    s = run_localisation(config).summary
    for row in s["slides"]:
        print(f"{row['slide_id']}: AUC {row['auc_mean']:.3f} ({row['n_tumour']}/{row['n_tiles']} tumour tiles)")
    for slide_id, why in {**s["skipped"], **s["errors"]}.items():
        print(f"skipped {slide_id}: {why}")
    for slide_id, notes in s.get("warnings", {}).items():
        for note in notes:
            print(f"warning {slide_id}: {note}")
    if s["n_slides"]:
        print(f"{s['arch']}: mean AUC {s['mean_auc']:.3f} over {s['n_slides']} slides, pooled {s['pooled_auc']:.3f}")
    else:
        print("no slide has both tumour and normal tiles: no AUC")
    return 0
