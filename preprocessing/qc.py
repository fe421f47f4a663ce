"""QC picture of one slide: thumbnail, tissue contours (green) and the kept tile grid (blue), with a title
(slide id, MPP, tile count, tissue area) and a legend.

Three separate steps, each a pure function of arrays except the last: :func:`draw_qc` draws the overlay,
:func:`qc_figure` adds the title and legend, :func:`save_png` writes the PNG atomically.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from acmil.atomic import atomic_path, leftovers
from acmil.features import disk_error

from .tissue import tissue_contours

QC_LONG_SIDE = 1024  # px: the overlay's longer side is at least this (smaller thumbnails are enlarged)
TILE_RGB = (40, 90, 230)
CONTOUR_RGB = (0, 200, 0)


@dataclass(frozen=True, kw_only=True)
class QCLabel:
    """What the QC title says about the slide."""

    slide_id: str
    mpp: float  # µm per level-0 pixel
    mpp_source: str
    n_tiles: int
    tile_size: int  # px at target_mpp
    target_mpp: float
    tissue_mm2: float


def draw_qc(
    thumb: np.ndarray,
    mask: np.ndarray | None,
    coords: np.ndarray,
    patch_size_level0: float,
    level0_size: tuple[int, int],
    min_long_side: int = QC_LONG_SIDE,
) -> np.ndarray:
    """(h, w, 3) uint8 RGB overlay, enlarged so that its longer side is at least ``min_long_side``.

    Args:
        thumb: (h, w, 3) uint8 RGB thumbnail of the whole slide.
        mask: (hm, wm) bool tissue mask of the whole slide (any scale), or None.
        coords: (N, 2) level-0 (x, y) of the kept tiles.
        patch_size_level0: tile side in level-0 pixels.
        level0_size: level-0 (width, height).
    """
    img = np.ascontiguousarray(thumb)
    if max(img.shape[:2]) < min_long_side:
        f = min_long_side / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_LINEAR)
    else:
        img = img.copy()
    sx, sy = img.shape[1] / level0_size[0], img.shape[0] / level0_size[1]
    for x, y in np.asarray(coords).reshape(-1, 2):
        p0 = (int(round(x * sx)), int(round(y * sy)))
        p1 = (int(round((x + patch_size_level0) * sx)) - 1, int(round((y + patch_size_level0) * sy)) - 1)
        cv2.rectangle(img, p0, p1, TILE_RGB, 1)
    if mask is not None:
        mx, my = img.shape[1] / mask.shape[1], img.shape[0] / mask.shape[0]
        contours = [np.round(c * (mx, my)).astype(np.int32) for c in tissue_contours(mask)]
        cv2.drawContours(img, contours, -1, CONTOUR_RGB, max(2, min(img.shape[:2]) // 300))
    return img


def qc_figure(overlay: np.ndarray, label: QCLabel, dpi: int = 100) -> np.ndarray:
    """The overlay at its own pixel size under a title and a legend; (H, w, 3) uint8 RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    h, w = overlay.shape[:2]
    header = 78  # px above the image: two title lines and the legend
    fig = Figure(figsize=(w / dpi, (h + header) / dpi), dpi=dpi)  # no pyplot: safe in the planner thread
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, h / (h + header)))
    ax.imshow(overlay, interpolation="nearest")
    ax.set_axis_off()
    top = 1 - 8 / (h + header)
    fig.text(0.01, top, label.slide_id, ha="left", va="top", fontsize=13, fontweight="bold")
    fig.text(
        0.01,
        top - 24 / (h + header),
        f"{label.mpp:.4g} µm/px ({label.mpp_source}) · {label.n_tiles:,} tiles of {label.tile_size} px "
        f"at {label.target_mpp:g} µm/px · tissue {label.tissue_mm2:.2f} mm²",
        ha="left",
        va="top",
        fontsize=10,
    )
    tile = tuple(c / 255 for c in TILE_RGB)
    handles = [
        Line2D([], [], color=tuple(c / 255 for c in CONTOUR_RGB), lw=2.5, label="tissue contour"),
        Patch(facecolor="none", edgecolor=tile, lw=1.5, label=f"kept tile ({label.n_tiles:,})"),
    ]
    fig.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.01, h / (h + header)),
        ncol=2,
        frameon=False,
        fontsize=10,
        handlelength=1.6,
        borderaxespad=0.2,
    )
    fig.canvas.draw()
    return np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB PNG atomically (temporary name in the same folder, then rename).

    Raises:
        DiskFullError: the disk is full ("disk full while writing <path>"); OSError naming the file otherwise.
    """
    path = Path(path)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError(f"{path}: cannot encode the QC picture as PNG")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(png.tobytes())
    except OSError as err:
        raise disk_error(err, path) from err
    return path


def qc_leftovers(png: str | os.PathLike) -> list[Path]:
    """The temporary files a killed run left of the QC picture ``png``: those of :func:`save_png` (named by
    acmil.atomic) and the older ``.<name>.<pid>.partial.png``; the name is matched literally."""
    png = Path(png)
    older = re.compile(rf"\.{re.escape(png.name)}\.\d+\.partial\.png")
    try:
        names = sorted(entry.name for entry in png.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        names = []
    return leftovers(png) + [png.parent / name for name in names if older.fullmatch(name)]


def save_qc_geojson(
    path: str | os.PathLike,
    mask: np.ndarray | None,
    grid,
    dims: tuple[int, int],
    slide_id: str,
    mpp: float | None = None,
) -> Path:
    """The QC picture's content as QuPath GeoJSON, to review and correct tissue detection in QuPath: tissue
    contours (``annotation`` objects, class Tissue, with holes) and the kept tiles (``tile`` objects) exactly
    as the feature file stores them (coords, and the side rounded as ``patch_size_level0``)."""
    from acmil.geojson import tissue_features, write_geojson

    collection = tissue_features(
        slide_id,
        mask,
        dims,
        grid.coords,
        int(round(grid.patch_size_level0)),
        mpp=mpp,
        tissue_fraction=grid.tissue_fraction,
    )
    return write_geojson(path, collection)
