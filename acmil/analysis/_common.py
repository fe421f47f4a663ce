"""What every analysis command shares: choosing slides, running a checkpoint on them, writing outputs.

Outputs are written atomically (temporary name in the same folder, then renamed), so a file with its
final name is always whole; one unreadable feature file becomes an entry in ``errors``, not a crash.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.atomic import atomic_path, write_csv, write_json  # noqa: F401 - re-exported for the analyses
from acmil.features import SlideFeatures, list_feature_files, read_features


@dataclass(kw_only=True)
class AnalysedSlide:
    """One slide run through a model.

    Attributes:
        slide: the slide's features and coordinates.
        attention: (M, N) per-branch attention (eval mode).
        probabilities: (C,) slide probabilities.
    """

    slide: SlideFeatures
    attention: np.ndarray
    probabilities: np.ndarray

    @property
    def mean_attention(self) -> np.ndarray:
        """(N,) the mean over branches: the heatmap."""
        return self.attention.mean(axis=0)


@dataclass
class BatchLog:
    """Per-slide failures and skips of a batch, reported in the command's JSON output."""

    errors: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # e.g. annotations repaired or clipped

    def warn(self, slide_id: str, messages: list[str]) -> None:
        if messages:
            self.warnings.setdefault(slide_id, []).extend(messages)

    def as_dict(self) -> dict[str, dict]:
        out: dict[str, dict] = {"errors": dict(self.errors), "skipped": dict(self.skipped)}
        if self.warnings:
            out["warnings"] = {k: list(v) for k, v in self.warnings.items()}
        return out


def select_slides(features_dir: str | os.PathLike, slide_ids: Sequence[str] | None = None) -> dict[str, Path]:
    """slide_id -> feature file, all of ``features_dir`` or the requested ids (unknown ids are an error)."""
    files = list_feature_files(features_dir)
    if not files:
        raise FileNotFoundError(f"{features_dir}: no .h5 feature files")
    if not slide_ids:
        return files
    missing = [s for s in slide_ids if s not in files]
    if missing:
        raise FileNotFoundError(f"{features_dir}: no feature file for slide(s) {', '.join(missing)}")
    return {s: files[s] for s in slide_ids}


def iter_slides(files: dict[str, Path], log: BatchLog, in_dim: int | None = None) -> Iterator[SlideFeatures]:
    """Read each feature file; unreadable ones, and with ``in_dim`` those of another feature width (the check
    ``predict`` and ``serve`` use), are recorded in ``log.errors`` and skipped."""
    from acmil.inference import check_feature_width

    for slide_id, path in files.items():
        try:
            slide = read_features(path, slide_id=None)
            check_feature_width(slide.dim, in_dim, path)
        except (OSError, ValueError) as err:
            log.errors[slide_id] = str(err)
            continue
        yield slide


def run_model(model: Any, slide: SlideFeatures) -> AnalysedSlide:
    """Eval-mode attention and probabilities of ``model`` on one slide."""
    from acmil.inference import predict_bag

    pred = predict_bag(model, slide.features)
    return AnalysedSlide(slide=slide, attention=pred.attention, probabilities=pred.probabilities)


def checkpoint_names(
    paths: Sequence[str | os.PathLike], archs: Sequence[str], names: Sequence[str] | None
) -> list[str]:
    """Display names for checkpoints: given names, else the architecture (made unique by the file's folder)."""
    if names:
        if len(names) != len(paths):
            raise ValueError(f"--name given {len(names)} times for {len(paths)} checkpoints")
        return list(names)
    out = [a.upper() for a in archs]
    for i, name in enumerate(out):
        if out.count(name) > 1:
            out[i] = f"{name} ({Path(paths[i]).resolve().parent.name}/{Path(paths[i]).name})"
    return out


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported lazily."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
