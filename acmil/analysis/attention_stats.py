"""``acmil attention-stats``: how concentrated a model's attention is (the ACMIL paper's measure).

For every slide and every checkpoint: the cumulative attention held by the top-K tiles for
K = 1, 5, 10, 50, 100, 1 % and 10 % of the slide's tiles, per branch and for the mean over branches.
A value near 1 at K = 1 means one tile takes all the attention (the over-concentration ACMIL is
designed to prevent). Writes ``attention_stats.csv`` (one row per slide, checkpoint and branch),
``attention_stats.json`` (means over slides) and ``attention_curve.png`` (cumulative attention against
the fraction of top tiles, mean over slides, one line per checkpoint).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.command import AppendAction, CommandParser, as_list, command_parser, config_from

from ._common import (
    BatchLog,
    checkpoint_names,
    iter_slides,
    pyplot,
    run_model,
    save_figure,
    select_slides,
    write_csv,
    write_json,
)

TOP_COUNTS = (1, 5, 10, 50, 100)
TOP_FRACTIONS = (0.01, 0.10)
CURVE_GRID = np.logspace(-3, 0, 61)  # fractions of the slide's tiles, 0.1 % .. 100 %


def topk_keys() -> list[str]:
    return [f"top{k}" for k in TOP_COUNTS] + [f"top{round(f * 100)}pct" for f in TOP_FRACTIONS]


def topk_cumulative(attention: np.ndarray) -> dict[str, float]:
    """Cumulative attention of the top-K tiles of one distribution.

    Args:
        attention: (N,) non-negative weights summing to 1.

    Returns:
        ``top1`` ... ``top100``, ``top1pct``, ``top10pct``. K larger than N counts all tiles (1.0);
        a percentage rounds up to at least one tile.
    """
    n = attention.shape[0]
    cum = np.cumsum(np.sort(attention)[::-1])  # (N,) descending cumulative sum
    out = {f"top{k}": float(cum[min(k, n) - 1]) for k in TOP_COUNTS}
    for f in TOP_FRACTIONS:
        out[f"top{round(f * 100)}pct"] = float(cum[max(1, math.ceil(f * n)) - 1])
    return out


def cumulative_curve(attention: np.ndarray, grid: np.ndarray = CURVE_GRID) -> np.ndarray:
    """Cumulative attention at each fraction of top tiles in ``grid`` (G,), for attention (N,)."""
    n = attention.shape[0]
    cum = np.concatenate([[0.0], np.cumsum(np.sort(attention)[::-1])])  # (N + 1,) by tile count
    return np.interp(grid * n, np.arange(n + 1), cum)


def slide_rows(name: str, slide_id: str, attention: np.ndarray) -> list[dict]:
    """Rows for one slide: ``mean`` first, then each branch of attention (M, N)."""
    rows = []
    branches = [("mean", attention.mean(axis=0))] + (
        [(str(i), a) for i, a in enumerate(attention)] if attention.shape[0] > 1 else []
    )
    for branch, att in branches:
        rows.append(
            {
                "checkpoint": name,
                "slide_id": slide_id,
                "branch": branch,
                "n_tiles": attention.shape[1],
                **topk_cumulative(att),
            }
        )
    return rows


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Means over slides, per checkpoint and branch: {checkpoint: {branch: {topK: mean, "n_slides": S}}}."""
    out: dict[str, dict] = {}
    for row in rows:
        out.setdefault(row["checkpoint"], {}).setdefault(row["branch"], []).append(row)
    return {
        ckpt: {
            branch: {"n_slides": len(rs), **{k: float(np.mean([r[k] for r in rs])) for k in topk_keys()}}
            for branch, rs in branches.items()
        }
        for ckpt, branches in out.items()
    }


def plot_curves(curves: dict[str, list[np.ndarray]], path: Path, grid: np.ndarray = CURVE_GRID) -> Path:
    """Mean (and inter-quartile band) over slides of the cumulative attention curve, per checkpoint."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, per_slide in curves.items():
        arr = np.stack(per_slide)  # (S, G)
        line = ax.plot(grid * 100, arr.mean(0), label=f"{name} ({len(per_slide)} slides)")[0]
        ax.fill_between(grid * 100, *np.percentile(arr, [25, 75], axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("top tiles by attention (% of the slide's tiles)")
    ax.set_ylabel("cumulative attention (mean over branches)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Attention concentration")
    return save_figure(fig, path)


def attention_stats(
    checkpoints: Sequence[str],
    features_dir: str,
    out_dir: str,
    slide_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> dict:
    """Run every checkpoint on the slides and write the CSV, JSON and curve plot into ``out_dir``."""
    from acmil.checkpoint import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [load_model(c) for c in checkpoints]
    labels = checkpoint_names(checkpoints, [m.card.arch for m in loaded], names)
    files = select_slides(features_dir, slide_ids)
    log = BatchLog()
    rows: list[dict] = []
    curves: dict[str, list[np.ndarray]] = {name: [] for name in labels}
    widths = {m.card.in_dim for m in loaded}
    for slide in iter_slides(files, log, widths.pop() if len(widths) == 1 else None):
        if slide.n_patches == 0:
            log.skipped[slide.slide_id] = "no tiles"
            continue
        for name, lm in zip(labels, loaded, strict=True):
            result = run_model(lm.model, slide)
            rows.extend(slide_rows(name, slide.slide_id, result.attention))
            curves[name].append(cumulative_curve(result.mean_attention))
    if not rows:
        raise ValueError(f"{features_dir}: no slide could be analysed ({log.errors or 'no tiles'})")
    write_csv(out / "attention_stats.csv", rows, ["checkpoint", "slide_id", "branch", "n_tiles", *topk_keys()])
    summary = {
        "checkpoints": dict(zip(labels, map(str, checkpoints), strict=True)),
        "n_slides": len({r["slide_id"] for r in rows}),
        "mean_over_slides": summarise(rows),
        **log.as_dict(),
    }
    write_json(out / "attention_stats.json", summary)
    plot_curves(curves, out / "attention_curve.png")
    return summary


@dataclass(kw_only=True)
class AttentionStatsConfig:
    """``acmil attention-stats``' options (a config file's keys are these names)."""

    checkpoint: list[str]  # one or more checkpoints to compare
    features: str
    out: str
    name: list[str] | None = None  # display name per checkpoint
    slides: list[str] | None = None  # slide ids (default: all)

    def __post_init__(self) -> None:  # a config file may give one value without a list
        self.checkpoint, self.name, self.slides = as_list(self.checkpoint), as_list(self.name), as_list(self.slides)


@dataclass(kw_only=True)
class AttentionStatsResult:
    """What ``acmil attention-stats`` wrote.

    Attributes:
        summary: the content of ``attention_stats.json``: ``mean_over_slides`` per checkpoint name and branch
            (``top1`` ... ``top10pct``, ``n_slides``), with ``errors`` and ``skipped``.
        paths: ``attention_stats.csv``, ``attention_stats.json``, ``attention_curve.png``.
    """

    summary: dict[str, Any]
    paths: list[Path] = field(default_factory=list)


def run_attention_stats(config: AttentionStatsConfig) -> AttentionStatsResult:
    """Run every checkpoint on the selected slides and write the statistics into ``config.out``."""
    summary = attention_stats(
        checkpoints=config.checkpoint,
        features_dir=config.features,
        out_dir=config.out,
        slide_ids=config.slides,
        names=config.name,
    )
    out = Path(config.out)
    paths = [out / "attention_stats.csv", out / "attention_stats.json", out / "attention_curve.png"]
    return AttentionStatsResult(summary=summary, paths=paths)


def build_parser() -> CommandParser:
    p = command_parser("acmil attention-stats", __doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action=AppendAction, required=True, help="checkpoint; repeat to compare models")
    p.add_argument("--name", action=AppendAction, help="display name per --checkpoint (default: the architecture)")
    p.add_argument("--features", required=True, help="folder of <slide_id>.h5 feature files")
    p.add_argument("--slides", nargs="+", help="slide ids to analyse (default: all)")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    config = config_from(build_parser().parse_args(argv), AttentionStatsConfig)
    summary = run_attention_stats(config).summary
    for name, branches in summary["mean_over_slides"].items():
        m = branches["mean"]
        print(
            f"{name}: {m['n_slides']} slides, mean attention in top-1 {m['top1']:.3f}, top-10 {m['top10']:.3f}, "
            f"top-10% {m['top10pct']:.3f}"
        )
    for slide_id, err in summary["errors"].items():
        print(f"skipped {slide_id}: {err}")
    print(f"wrote {Path(config.out) / 'attention_stats.csv'}, attention_stats.json, attention_curve.png")
    return 0
