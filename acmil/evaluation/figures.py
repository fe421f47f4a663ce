"""Figures of a split (ROC and PR with bootstrap bands, confusion matrix, reliability diagram) and of a model
comparison, each written as PNG and SVG through acmil.atomic. matplotlib is imported here only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acmil.atomic import atomic_path

from .curves import CurveBand

FORMATS = ("png", "svg")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, stem: Path, dpi: int = 120) -> list[Path]:
    """``stem``.png and ``stem``.svg, atomically; closes the figure."""
    plt = pyplot()
    paths = []
    try:
        for fmt in FORMATS:
            path = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def _panels(n: int) -> tuple[Any, np.ndarray]:
    plt = pyplot()
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.6), squeeze=False, layout="constrained")
    return fig, axes[0]


def curve_figure(bands_by_model: dict[str, list[CurveBand]], kind: str, title: str, level: float = 0.95) -> Any:
    """One panel per class; each model's curve with its shaded bootstrap band."""
    classes = list(dict.fromkeys(b.class_name for bands in bands_by_model.values() for b in bands))
    fig, axes = _panels(max(len(classes), 1))
    area_name = "AUC" if kind == "roc" else "AP"
    for ax, cls in zip(axes, classes, strict=False):
        for colour, (model, bands) in zip(("C0", "C3", "C2", "C1"), bands_by_model.items(), strict=False):
            band = next((b for b in bands if b.class_name == cls), None)
            if band is None:
                continue
            label = f"{model + ': ' if len(bands_by_model) > 1 else ''}{area_name} {band.area:.3f}"
            ax.plot(
                band.curve_x,
                band.curve_y,
                color=colour,
                lw=1.8,
                label=label,
                drawstyle="default" if kind == "roc" else "steps-pre",
            )
            ax.fill_between(
                band.x,
                band.low,
                band.high,
                color=colour,
                alpha=0.2,
                lw=0,
                label=f"{int(level * 100)} % bootstrap band" if colour == "C0" else None,
            )
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
            ax.set(xlabel="false-positive rate", ylabel="true-positive rate")
        else:
            prevalence = next(b.prevalence for bands in bands_by_model.values() for b in bands if b.class_name == cls)
            ax.axhline(prevalence, ls="--", color="grey", lw=0.8, label=f"prevalence {prevalence:.2f}")
            ax.set(xlabel="recall", ylabel="precision")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"{cls} vs rest", aspect="equal")
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    fig.suptitle(title)
    return fig


def confusion_figure(counts: np.ndarray, class_names: Sequence[str], title: str) -> Any:
    """Counts, coloured by the share of each true class (row)."""
    plt = pyplot()
    counts = np.asarray(counts)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ticks = range(len(class_names))
    ax.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return fig


def reliability_figure(reliability: dict[str, list], ece: float, brier: float, title: str) -> Any:
    """Accuracy against confidence per bin (bars, with the gap to the diagonal) over the confidence histogram."""
    plt = pyplot()
    edges = np.asarray(reliability["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = [a is not None for a in reliability["accuracy"]]
    acc = np.array([a if a is not None else 0.0 for a in reliability["accuracy"]])
    conf = np.array([c if c is not None else 0.0 for c in reliability["confidence"]])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.6, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres[filled], acc[filled], width=width[filled], color="C0", edgecolor="white", label="accuracy")
    top.bar(
        centres[filled],
        (conf - acc)[filled],
        bottom=acc[filled],
        width=width[filled],
        color="C3",
        alpha=0.35,
        edgecolor="C3",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    top.set(ylim=(0, 1), ylabel="accuracy", title=f"{title}\nECE {ece:.3f}, Brier {brier:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, reliability["count"], width=width, color="grey", edgecolor="white")
    bottom.set(xlim=(0, 1), xlabel="confidence (top-class probability)", ylabel="slides")
    return fig


def comparison_figure(rows: list[dict[str, Any]], name_a: str, name_b: str, title: str) -> Any:
    """Forest plot: each metric's difference A - B with its 95 % interval and p-value."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(rows) + 1.4))
    ys = np.arange(len(rows))[::-1]
    for y, row in zip(ys, rows, strict=True):
        lo, hi, d = row["ci_low"], row["ci_high"], row["difference"]
        if d is None:
            continue
        ax.errorbar(
            d,
            y,
            xerr=[[d - (lo if lo is not None else d)], [(hi if hi is not None else d) - d]],
            fmt="o",
            color="C0" if row["test"].startswith("DeLong") else "C1",
            capsize=4,
        )
        ax.annotate(
            f"p = {row['p_value']:.3g}" if row["p_value"] is not None else "",
            (d, y),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.axvline(0, color="grey", ls="--", lw=0.8)
    ax.set(
        yticks=ys,
        yticklabels=[f"{r['metric']}\n({r['test']})" for r in rows],
        xlabel=f"difference {name_a} - {name_b} (95 % interval)",
        title=title,
    )
    ax.set_ylim(-0.7, len(rows) - 0.3)
    return fig
