"""``acmil heatmap``: attention heatmap PNGs for a cohort, with the rendering the service uses.

For every slide: ``<slide_id>_mean.png`` (mean attention over branches, the heatmap shown to people) and,
for multi-branch models, ``<slide_id>_branch<i>.png``, all drawn by :func:`acmil.heatmap.render_heatmap`
over a thumbnail of the slide when ``--slides`` holds it (read through OpenSlide), else over a white
canvas. ``heatmaps.json`` lists the slides, their prediction and the files written.

``--format geojson`` (or ``png,geojson``) writes ``<slide_id>_attention.geojson`` instead of (or beside) the
PNGs: one QuPath detection per tile with measurements ``attention``, ``attention_branch_<m>`` and
``attention_rank``, the ``--top-k`` tiles classified "Top attention" (:mod:`acmil.geojson`). Drag it onto
the slide in QuPath and colour the tiles by a measurement (Measure > Show measurement maps).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.command import CommandParser, as_list, command_parser, config_from
from acmil.geometry import SLIDE_EXTENSIONS, level0_extent
from acmil.heatmap import (
    DEFAULT_CMAP,
    DEFAULT_NORMALISATION,
    DEFAULT_SMOOTHING,
    DEFAULT_TRANSPARENT_BELOW,
    scaling_label,
)

from ._common import BatchLog, atomic_path, iter_slides, run_model, select_slides, write_json


def find_slide(slides_dir: str | os.PathLike, slide_id: str) -> Path | None:
    """The slide file ``<slide_id>.<ext>`` in ``slides_dir`` (any OpenSlide extension), or None."""
    for suffix in sorted(SLIDE_EXTENSIONS):
        for candidate in (Path(slides_dir) / f"{slide_id}{suffix}", Path(slides_dir) / f"{slide_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def slide_thumbnail(path: Path, max_size: int) -> tuple[object, tuple[int, int]]:
    """(thumbnail PIL image, level-0 (width, height)) of a slide, read with OpenSlide."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        return slide.get_thumbnail((max_size, max_size)), tuple(slide.dimensions)


def heatmaps(
    checkpoint: str,
    features_dir: str,
    out_dir: str,
    slides_dir: str | None = None,
    slide_ids: Sequence[str] | None = None,
    max_size: int = 1024,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    smoothing_sigma: float = DEFAULT_SMOOTHING,
    normalisation: str = DEFAULT_NORMALISATION,
    branches: bool = True,
    transparent_below: float = DEFAULT_TRANSPARENT_BELOW,
    formats: Sequence[str] = ("png",),
    top_k: int = 10,
    geojson_legacy: bool = False,
) -> dict:
    """Render and write the PNGs; returns the summary also written to ``heatmaps.json``."""
    from acmil.checkpoint import load_model
    from acmil.heatmap import render_heatmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(checkpoint)
    log = BatchLog()
    done: dict[str, dict] = {}
    for slide in iter_slides(select_slides(features_dir, slide_ids), log, lm.card.in_dim):
        sid = slide.slide_id
        try:
            patch = slide.patch_size_level0
            if not patch or slide.n_patches == 0:
                log.skipped[sid] = "no tiles" if slide.n_patches == 0 else "unknown patch size"
                continue
            background, size0, source = None, level0_extent(slide.coord_attrs, slide.coords, patch), "blank"
            path = find_slide(slides_dir, sid) if slides_dir else None
            if path is not None:
                try:
                    background, size0 = slide_thumbnail(path, max_size)
                    source = str(path)
                except Exception as err:  # noqa: BLE001 - OpenSlide raises several types; the heatmap still helps
                    source = f"blank ({path.name} unreadable: {err})"
            result = run_model(lm.model, slide)
            maps = {"mean": result.mean_attention}
            if branches and result.attention.shape[0] > 1:
                maps |= {f"branch{i}": a for i, a in enumerate(result.attention)}
            files = []
            for name, scores in maps.items() if "png" in formats else ():
                image = render_heatmap(
                    slide.coords,
                    scores,
                    patch,
                    size0,
                    background=background,
                    max_size=max_size,
                    cmap=cmap,
                    alpha=alpha,
                    smoothing_sigma=smoothing_sigma,
                    normalisation=normalisation,
                    transparent_below=transparent_below,
                )
                target = out / f"{sid}_{name}.png"
                with atomic_path(target) as tmp:
                    image.save(tmp, format="PNG")
                files.append(target.name)
            if "geojson" in formats:
                files.append(_write_geojson(out, slide, result.attention, top_k, geojson_legacy).name)
        except Exception as err:  # noqa: BLE001 - one bad slide (unreadable image, bad coords) never stops a batch
            log.errors[sid] = f"{type(err).__name__}: {err}"
            continue
        predicted = int(result.probabilities.argmax())
        done[sid] = {
            "files": files,
            "background": source,
            "n_tiles": slide.n_patches,
            "predicted": lm.card.class_names[predicted] if predicted < len(lm.card.class_names) else predicted,
            "probabilities": [float(p) for p in result.probabilities],
        }
    summary = {
        "checkpoint": str(checkpoint),
        "arch": lm.card.arch,
        "class_names": lm.card.class_names,
        "normalisation": normalisation,
        "cmap": cmap,
        "smoothing_sigma": smoothing_sigma,
        "transparent_below": transparent_below,
        "formats": list(formats),
        "scaling": scaling_label(normalisation, transparent_below, smoothing_sigma),
        "slides": done,
        **log.as_dict(),
    }
    write_json(out / "heatmaps.json", summary)
    return summary


def _write_geojson(out: Path, slide, attention: np.ndarray, top_k: int, legacy: bool) -> Path:
    """``<slide_id>_attention.geojson``: the tiles of the feature file with their attention, for QuPath."""
    from acmil.geojson import write_attention_geojson

    return write_attention_geojson(
        out / f"{slide.slide_id}_attention.geojson",
        slide.slide_id,
        slide.coords,
        slide.patch_size_level0,
        attention,
        top_k=top_k,
        legacy=legacy,
    )


def parse_formats(value: str | list[str]) -> list[str]:
    """``png,geojson`` -> ["png", "geojson"]; a list (from a config file) is checked the same way."""
    parts = value if isinstance(value, list) else str(value).split(",")
    formats = [str(f).strip().lower() for f in parts if str(f).strip()]
    unknown = sorted(set(formats) - {"png", "geojson"})
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"--format: expected png, geojson or png,geojson, got {value!r}")
    return formats


@dataclass(kw_only=True)
class HeatmapConfig:
    """``acmil heatmap``'s options (a config file's keys are these names)."""

    checkpoint: str
    features: str
    out: str
    slides: str | None = None  # folder of the slide images (thumbnail backgrounds)
    slide_ids: list[str] | None = None
    max_size: int = 1024
    cmap: str = DEFAULT_CMAP
    alpha: float = 0.5
    smoothing: float = DEFAULT_SMOOTHING
    normalisation: str = DEFAULT_NORMALISATION
    transparent_below: float = DEFAULT_TRANSPARENT_BELOW
    no_branches: bool = False
    format: list[str] = field(default_factory=lambda: ["png"])
    top_k: int = 10
    geojson_legacy: bool = False

    def __post_init__(self) -> None:  # a config file may give one value without a list
        self.slide_ids = as_list(self.slide_ids)


@dataclass(kw_only=True)
class HeatmapResult:
    """What ``acmil heatmap`` wrote.

    Attributes:
        summary: the content of ``heatmaps.json``: per slide its files, background, prediction and
            probabilities (``slides``), with ``skipped`` and ``errors``.
        paths: every file written (the PNGs / GeoJSON, then heatmaps.json).
    """

    summary: dict[str, Any]
    paths: list[Path] = field(default_factory=list)

    @property
    def slides(self) -> dict[str, dict]:
        return self.summary["slides"]


def run_heatmap(config: HeatmapConfig) -> HeatmapResult:
    """Render the heatmaps of every selected slide into ``config.out``."""
    if config.slides and not Path(config.slides).is_dir():
        raise FileNotFoundError(f"{config.slides}: slides folder not found")
    summary = heatmaps(
        checkpoint=config.checkpoint,
        features_dir=config.features,
        out_dir=config.out,
        slides_dir=config.slides,
        slide_ids=config.slide_ids,
        max_size=config.max_size,
        cmap=config.cmap,
        alpha=config.alpha,
        smoothing_sigma=config.smoothing,
        normalisation=config.normalisation,
        branches=not config.no_branches,
        transparent_below=config.transparent_below,
        formats=parse_formats(config.format),
        top_k=config.top_k,
        geojson_legacy=config.geojson_legacy,
    )
    out = Path(config.out)
    files = [out / name for slide in summary["slides"].values() for name in slide["files"]]
    return HeatmapResult(summary=summary, paths=[*files, out / "heatmaps.json"])


def build_parser() -> CommandParser:
    p = command_parser("acmil heatmap", __doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="trained checkpoint")
    p.add_argument("--features", required=True, help="folder of <slide_id>.h5 feature files")
    p.add_argument("--slides", help="folder of the slide images: their thumbnails become the background")
    p.add_argument("--slide-ids", nargs="+", help="slide ids to render (default: all)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-size", type=int, default=1024, help="longest side of each PNG in pixels")
    # Defaults = the viewer's (acmil.heatmap.DEFAULT_*), so a figure and the viewer show a slide the same way.
    p.add_argument("--cmap", default=DEFAULT_CMAP, help="matplotlib colormap (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity over the thumbnail")
    p.add_argument(
        "--smoothing",
        type=float,
        default=DEFAULT_SMOOTHING,
        help="Gaussian smoothing sigma in tiles (default: %(default)s; 0 = none)",
    )
    p.add_argument(
        "--normalisation",
        choices=("log", "rank", "minmax"),
        default=DEFAULT_NORMALISATION,
        help="score scaling (default: %(default)s)",
    )
    p.add_argument(
        "--transparent-below",
        type=float,
        default=DEFAULT_TRANSPARENT_BELOW,
        metavar="X",
        help="scaled scores under X are not drawn (default: %(default)s; 0 = every tile)",
    )
    p.add_argument("--no-branches", action="store_true", help="only the mean heatmap, no per-branch PNGs")
    p.add_argument(
        "--format",
        type=parse_formats,
        default=["png"],
        metavar="png|geojson|png,geojson",
        help="PNG heatmaps and/or QuPath GeoJSON (one detection per tile, attention as measurements)",
    )
    p.add_argument("--top-k", type=int, default=10, help="GeoJSON: tiles classified 'Top attention'")
    p.add_argument(
        "--geojson-legacy",
        action="store_true",
        help="GeoJSON for QuPath 0.3 and earlier (measurements as a list, colorRGB)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    config = config_from(build_parser().parse_args(argv), HeatmapConfig)
    s = run_heatmap(config).summary
    n_files = sum(len(d["files"]) for d in s["slides"].values())
    n_thumb = sum(not d["background"].startswith("blank") for d in s["slides"].values())
    print(f"wrote {n_files} heatmaps for {len(s['slides'])} slides ({n_thumb} over a slide thumbnail) to {config.out}")
    for slide_id, why in {**s["skipped"], **s["errors"]}.items():
        print(f"skipped {slide_id}: {why}")
    return 1 if s["errors"] and not s["slides"] else 0
