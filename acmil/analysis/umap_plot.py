"""``acmil umap``: UMAP of the model's hidden instance features, as in the ACMIL paper.

Each point is one tile, embedded by the model's instance layer (``model.embed_instances``). Panels:
coloured by attention (the tile's rank within its slide, as raw weights shrink with slide size), by the
branch that attends to the tile most (ACMIL's branches should look at different tiles), and, with
``--masks`` (PNG) or ``--annotations DIR --classes Tumor`` (QuPath GeoJSON), by the ground-truth tumour
label. Large slides are sub-sampled with a fixed seed; the command says how many points it drew. Writes
``umap.png``, ``umap.csv`` (the 2-D points) and ``umap.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.command import CommandParser, as_list, command_parser, config_from
from acmil.geometry import rank_normalise

from ._common import BatchLog, iter_slides, pyplot, save_figure, select_slides, write_csv, write_json


def subsample(n: int, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` items, drawn without replacement."""
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def within_slide_rank(attention: np.ndarray) -> np.ndarray:
    """(N,) percentile rank in [0, 1] of each tile's attention within its slide (1 = most attended)."""
    if attention.shape[0] == 1:
        return np.ones(1)  # a slide's only tile is its most attended
    return rank_normalise(attention)  # ties share their mean rank


def embed_2d(x: np.ndarray, seed: int, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """UMAP of x (P, H) to (P, 2); fixed seed, so the same input draws the same map."""
    import umap  # slow import (numba); only this command pays it

    n_neighbors = max(2, min(n_neighbors, x.shape[0] - 1))
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, n_jobs=1)
    return reducer.fit_transform(x).astype(np.float32)


def plot_umap(
    xy: np.ndarray,
    attention_rank: np.ndarray,
    branch: np.ndarray,
    truth: np.ndarray | None,
    n_branches: int,
    title: str,
    path: Path,
) -> Path:
    plt = pyplot()
    panels = 2 + (truth is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6), squeeze=False)
    axes = axes[0]
    kw = {"s": 4, "linewidths": 0, "rasterized": True}
    order = np.argsort(attention_rank)  # draw the most attended tiles last, on top
    sc = axes[0].scatter(xy[order, 0], xy[order, 1], c=attention_rank[order], cmap="inferno", **kw)
    fig.colorbar(sc, ax=axes[0], label="attention rank within slide")
    axes[0].set_title("attention (mean over branches)")
    cmap = plt.get_cmap("tab10", max(n_branches, 1))
    sc = axes[1].scatter(xy[:, 0], xy[:, 1], c=branch, cmap=cmap, vmin=-0.5, vmax=n_branches - 0.5, **kw)
    cb = fig.colorbar(sc, ax=axes[1], ticks=range(n_branches), label="branch")
    cb.ax.set_yticklabels([str(i) for i in range(n_branches)])
    axes[1].set_title("branch with the highest attention")
    if truth is not None:
        for value, colour, label in ((False, "#9ecae1", "normal"), (True, "#d62728", "tumour")):
            sel = truth == value
            axes[2].scatter(xy[sel, 0], xy[sel, 1], c=colour, label=f"{label} ({int(sel.sum())})", **kw)
        axes[2].legend(markerscale=3, loc="best")
        axes[2].set_title("ground truth (tumour mask)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return save_figure(fig, path)


def umap_analysis(
    checkpoint: str,
    features_dir: str,
    out_dir: str,
    slide_ids: Sequence[str] | None = None,
    masks_dir: str | None = None,
    max_points_per_slide: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    annotations_dir: str | None = None,
    classes: Sequence[str] = ("Tumor",),
) -> dict:
    """Embed, sub-sample, run UMAP and write ``umap.png``, ``umap.csv`` and ``umap.json`` into ``out_dir``."""
    from acmil.checkpoint import load_model
    from acmil.inference import instance_embeddings, predict_bag

    from .masks import GroundTruth

    with_truth = masks_dir is not None or annotations_dir is not None
    truth_source = (
        GroundTruth(masks_dir, annotations_dir, tuple(classes), threshold, missing_is_negative=True)
        if with_truth
        else None
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(checkpoint)
    rng = np.random.default_rng(seed)
    log = BatchLog()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("emb", "rank", "att", "branch", "truth", "idx")}
    ids: list[str] = []
    drawn: dict[str, dict[str, int]] = {}
    for slide in iter_slides(select_slides(features_dir, slide_ids), log, lm.card.in_dim):
        if slide.n_patches == 0:
            log.skipped[slide.slide_id] = "no tiles"
            continue
        truth = None
        if truth_source is not None:
            try:
                truth, warnings = truth_source.labels(slide)
            except ValueError as err:
                log.errors[slide.slide_id] = str(err)
                continue
            log.warn(slide.slide_id, warnings)
        idx = subsample(slide.n_patches, max_points_per_slide, rng)
        pred = predict_bag(lm.model, slide.features)
        parts["emb"].append(instance_embeddings(lm.model, slide.features[idx]))
        parts["rank"].append(within_slide_rank(pred.mean_attention)[idx])
        parts["att"].append(pred.mean_attention[idx])
        parts["branch"].append(pred.attention.argmax(axis=0)[idx])
        parts["idx"].append(idx)
        if truth is not None:
            parts["truth"].append(truth[idx])
        ids += [slide.slide_id] * len(idx)
        drawn[slide.slide_id] = {"n_tiles": slide.n_patches, "n_drawn": int(len(idx))}
    if not ids:
        raise ValueError(f"{features_dir}: no slide could be embedded ({log.errors or log.skipped})")
    if len(ids) < 4:
        raise ValueError(f"{features_dir}: only {len(ids)} tiles; UMAP needs at least 4")
    cat = {k: np.concatenate(v) for k, v in parts.items() if v}
    xy = embed_2d(cat["emb"], seed)
    n_branches = int(lm.card.arch_args.get("n_branches", 1))  # acmil and acmil_mha; 1 for the others
    truth = cat.get("truth")
    title = f"{lm.card.arch.upper()}: {len(ids)} tiles from {len(drawn)} slides (UMAP of instance features)"
    plot_umap(xy, cat["rank"], cat["branch"], truth, n_branches, title, out / "umap.png")
    truth_col = truth if truth is not None else [None] * len(ids)
    columns = (ids, cat["idx"], xy[:, 0], xy[:, 1], cat["att"], cat["rank"], cat["branch"], truth_col)
    rows = [
        {
            "slide_id": s,
            "tile": int(t),
            "x": float(a),
            "y": float(b),
            "attention": float(w),
            "attention_rank": float(r),
            "branch": int(br),
            **({"tumour": int(tr)} if truth is not None else {}),
        }
        for s, t, a, b, w, r, br, tr in zip(*columns, strict=True)
    ]
    write_csv(out / "umap.csv", rows)
    summary = {
        "checkpoint": str(checkpoint),
        "arch": lm.card.arch,
        "seed": seed,
        "max_points_per_slide": max_points_per_slide,
        "n_points": len(ids),
        "n_tiles_total": sum(d["n_tiles"] for d in drawn.values()),
        "slides": drawn,
        "coloured_by": ["attention_rank", "branch"] + (["tumour"] if truth is not None else []),
        **({"ground_truth": truth_source.describe()} if truth_source else {}),
        **log.as_dict(),
    }
    write_json(out / "umap.json", summary)
    return summary


@dataclass(kw_only=True)
class UmapConfig:
    """``acmil umap``'s options (a config file's keys are these names)."""

    checkpoint: str
    features: str
    out: str
    slides: list[str] | None = None  # slide ids (default: all)
    masks: str | None = None  # ground truth from PNG masks ...
    annotations: str | None = None  # ... or from QuPath GeoJSON of ``classes``
    classes: str = "Tumor"  # comma-separated
    max_points_per_slide: int = 1000
    seed: int = 0
    threshold: float = 0.5

    def __post_init__(self) -> None:  # a config file may give one value without a list
        self.slides = as_list(self.slides)


@dataclass(kw_only=True)
class UmapResult:
    """What ``acmil umap`` wrote.

    Attributes:
        summary: the content of ``umap.json`` (points drawn per slide, colourings, skipped, errors, warnings).
        paths: ``umap.png``, ``umap.csv`` (the 2-D points), ``umap.json``.
    """

    summary: dict[str, Any]
    paths: list[Path] = field(default_factory=list)


def run_umap(config: UmapConfig) -> UmapResult:
    """Embed the selected slides' tiles and write the UMAP figure, points and summary into ``config.out``."""
    from acmil.annotations import parse_classes

    summary = umap_analysis(
        checkpoint=config.checkpoint,
        features_dir=config.features,
        out_dir=config.out,
        slide_ids=config.slides,
        masks_dir=config.masks,
        max_points_per_slide=config.max_points_per_slide,
        seed=config.seed,
        threshold=config.threshold,
        annotations_dir=config.annotations,
        classes=parse_classes(config.classes),
    )
    out = Path(config.out)
    return UmapResult(summary=summary, paths=[out / "umap.png", out / "umap.csv", out / "umap.json"])


def build_parser() -> CommandParser:
    p = command_parser("acmil umap", __doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="trained checkpoint")
    p.add_argument("--features", required=True, help="folder of <slide_id>.h5 feature files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--slides", nargs="+", help="slide ids to embed (default: all)")
    truth = p.add_mutually_exclusive_group()
    truth.add_argument(
        "--masks",
        help="folder of <slide_id>.png tumour masks: colour tiles by ground truth "
        "(slides without a mask count as normal)",
    )
    truth.add_argument(
        "--annotations",
        help="folder of <slide_id>.geojson QuPath exports: ground truth = "
        "annotations of --classes (slides without a file count as normal)",
    )
    p.add_argument("--classes", default="Tumor", help="annotation classes that are tumour, comma-separated")
    p.add_argument("--max-points-per-slide", type=int, default=1000, help="sub-sample larger slides (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sub-sampling and of UMAP")
    p.add_argument("--threshold", type=float, default=0.5, help="mask fraction that makes a tile tumour")
    return p


def main(argv: list[str] | None = None) -> int:
    config = config_from(build_parser().parse_args(argv), UmapConfig)
    s = run_umap(config).summary
    print(
        f"drew {s['n_points']} of {s['n_tiles_total']} tiles from {len(s['slides'])} slides "
        f"(at most {config.max_points_per_slide} per slide, seed {config.seed})"
    )
    for slide_id, why in {**s["skipped"], **s["errors"]}.items():
        print(f"skipped {slide_id}: {why}")
    for slide_id, notes in s.get("warnings", {}).items():
        for note in notes:
            print(f"warning {slide_id}: {note}")
    print(f"wrote {Path(config.out) / 'umap.png'}, umap.csv, umap.json")
    return 0
