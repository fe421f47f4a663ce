"""Whole-slide thumbnails in bounded memory: block-wise reads of the best pyramid level, each block area-averaged.

``openslide.OpenSlide.get_thumbnail`` decodes the whole pyramid level it reads from in one piece: on a slide
without a pyramid (a single-level 25,000 x 25,000 px tiled TIFF of 274 KB) that is level 0, 2.5 GB of RGBA and
5.8 GB at peak. :func:`read_thumbnail` reads the same level in blocks of at most ``READ_BLOCK`` x ``READ_BLOCK``
pixels and shrinks each block to its part of the thumbnail (``cv2.INTER_AREA``: the mean over the source pixels).

Memory bound: the thumbnail itself (w x h x 3 bytes, at most 4096 x 4096 x 3 = 48 MiB for the segmentation
thumbnail) plus the working set of one block, about 3 x READ_BLOCK² x 4 bytes = 12 MiB (the RGBA block from
OpenSlide, its numpy copy and OpenSlide's conversion buffer), plus OpenSlide's own tile cache (32 MiB by
default): under 200 MiB whatever the slide's size. Time grows with the pixels of the level read, so a level of
more than ``MAX_SOURCE_PIXELS`` is refused with a message naming the slide and what to do.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

READ_BLOCK = 1024  # side (px of the level read) of one read_region call (4 MiB of RGBA: little heap churn)
MAX_SOURCE_PIXELS = 10**10  # pixels of the level a thumbnail may decode: 100k x 100k px, minutes of decoding


class ThumbnailTooCostly(ValueError):
    """The slide has no pyramid level small enough to make a thumbnail from in reasonable time."""


def thumbnail_level(level_downsamples: tuple[float, ...], scale: float) -> int:
    """The coarsest level whose downsample is at most ``scale`` (level-0 px per thumbnail px)."""
    candidates = [i for i, d in enumerate(level_downsamples) if d <= scale * (1 + 1e-6)]
    return max(candidates, key=lambda i: level_downsamples[i]) if candidates else 0


def read_thumbnail(handle, max_width: int, max_height: int, path: str | Path = "") -> np.ndarray:
    """(h, w, 3) uint8 RGB thumbnail of the whole slide that fits in ``max_width`` x ``max_height``.

    Args:
        handle: an ``openslide.OpenSlide`` (or ``ImageSlide``): ``dimensions``, ``level_dimensions``,
            ``level_downsamples`` and ``read_region``.
        path: the slide file, for messages.

    Raises:
        ThumbnailTooCostly: the level to read has more than ``MAX_SOURCE_PIXELS`` pixels.
    """
    from .slide import composite_white

    w0, h0 = (int(v) for v in handle.dimensions)
    scale0 = max(1.0, w0 / max(1, max_width), h0 / max(1, max_height))  # level-0 px per thumbnail px
    tw, th = max(1, min(max_width, round(w0 / scale0))), max(1, min(max_height, round(h0 / scale0)))
    downsamples = tuple(float(d) for d in handle.level_downsamples)
    level = thumbnail_level(downsamples, scale0)
    wl, hl = (int(v) for v in handle.level_dimensions[level])
    if wl * hl > MAX_SOURCE_PIXELS:
        raise ThumbnailTooCostly(
            f"{path}: level {level} is {wl}x{hl} px ({wl * hl / 1e9:.1f} Gpx) and the slide has no smaller pyramid "
            f"level; its {tw}x{th} px tissue thumbnail would decode all of it "
            f"(limit {MAX_SOURCE_PIXELS / 1e9:.0f} Gpx). "
            "Save the slide as a pyramidal TIFF (for example: vips tiffsave IN OUT.tif --tile --pyramid "
            "--compression jpeg) and preprocess that file"
        )
    ds = downsamples[level]
    sx, sy = wl / tw, hl / th  # level px per thumbnail px
    bx, by = max(1, int(READ_BLOCK // sx)), max(1, int(READ_BLOCK // sy))  # block size in thumbnail px
    out = np.empty((th, tw, 3), np.uint8)
    for ty0 in range(0, th, by):
        ty1 = min(th, ty0 + by)
        ly0, ly1 = _span(ty0, ty1, sy, hl)
        for tx0 in range(0, tw, bx):
            tx1 = min(tw, tx0 + bx)
            lx0, lx1 = _span(tx0, tx1, sx, wl)
            rgba = np.asarray(handle.read_region((round(lx0 * ds), round(ly0 * ds)), level, (lx1 - lx0, ly1 - ly0)))
            # shrink first, composite after: both are linear in the (premultiplied) pixels, so the order does not
            # matter and the full-size RGB copy is never made
            small = cv2.resize(rgba, (tx1 - tx0, ty1 - ty0), interpolation=cv2.INTER_AREA)
            del rgba
            out[ty0:ty1, tx0:tx1] = composite_white(small.reshape(ty1 - ty0, tx1 - tx0, -1))
    return out


def _span(t0: int, t1: int, scale: float, size: int) -> tuple[int, int]:
    """Level pixels [a, b) under thumbnail pixels [t0, t1), at least one pixel, inside [0, size)."""
    a = min(size - 1, int(math.floor(t0 * scale)))
    b = min(size, max(a + 1, int(math.ceil(t1 * scale))))
    return a, b
