"""Slide images through OpenSlide: metadata, thumbnails, DeepZoom tiles and tile crops.

A slide's image is optional: every method answers sensibly (None or 404) when a slide has only its
feature file, or when its image cannot be opened (the reason is kept and shown in the metadata).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .errors import NotFound
from .registry import LRUCache, SlideEntry

MAX_CROP_LEVEL0 = 8192  # a tile crop may span at most this many level-0 pixels
MAX_CROP_OUT = 1024


@dataclass
class _Handle:
    slide: Any  # openslide.OpenSlide or openslide.ImageSlide
    deepzoom: Any  # openslide.deepzoom.DeepZoomGenerator
    lock: Any  # PIL-backed ImageSlide is not thread-safe; OpenSlide is
    thumbnail: Image.Image | None = None


class SlideImages:
    """Open slide handles (LRU) and the image operations the routers need."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._handles = LRUCache(settings.slide_cache_size)
        self._errors: dict[str, str] = {}
        self._open_lock = threading.Lock()

    def _handle(self, entry: SlideEntry) -> _Handle | None:
        if entry.image_path is None:
            return None
        key = str(entry.image_path)
        handle = self._handles.get(key)
        if handle is not None or key in self._errors:
            return handle
        with self._open_lock:
            handle = self._handles.get(key)
            if handle is None and key not in self._errors:
                handle = self._open(entry)
        return handle

    def _open(self, entry: SlideEntry) -> _Handle | None:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        key = str(entry.image_path)
        try:
            with warnings.catch_warnings():  # PIL warns about odd TIFF tags while it falls back; the error says enough
                warnings.simplefilter("ignore")
                slide = openslide.open_slide(key)
        except Exception as err:  # noqa: BLE001 - OpenSlide/PIL raise many types for a bad file
            self._errors[key] = f"cannot open slide image {entry.image_path.name}: {err}"
            return None
        deepzoom = DeepZoomGenerator(slide, self.settings.tile_size, self.settings.tile_overlap, limit_bounds=False)
        lock = nullcontext() if isinstance(slide, openslide.OpenSlide) else threading.Lock()
        handle = _Handle(slide, deepzoom, lock)
        self._handles.put(key, handle)
        return handle

    def _require(self, entry: SlideEntry) -> _Handle:
        handle = self._handle(entry)
        if handle is None:
            reason = self._errors.get(str(entry.image_path), "no slide image for this slide")
            raise NotFound(f"slide {entry.slide_id!r}: {reason}")
        return handle

    # --- metadata -------------------------------------------------------------------------------
    def info(self, entry: SlideEntry) -> dict[str, Any]:
        handle = self._handle(entry)
        if handle is None:
            return {"has_image": False, "error": self._errors.get(str(entry.image_path))}
        props = handle.slide.properties
        return {
            "has_image": True,
            "mpp": _mpp(props),
            "vendor": props.get("openslide.vendor"),
            "level_count": handle.slide.level_count,
            "objective_power": _float(props.get("openslide.objective-power")),
        }

    def dimensions(self, entry: SlideEntry) -> tuple[int, int] | None:
        handle = self._handle(entry)
        return tuple(handle.slide.dimensions) if handle else None  # type: ignore[return-value]

    def thumbnail(self, entry: SlideEntry, max_size: int) -> Image.Image | None:
        """The whole slide at most ``max_size`` px on its longer side (kept at up to 2048 px), or None."""
        handle = self._handle(entry)
        if handle is None:
            return None
        if handle.thumbnail is None or max(handle.thumbnail.size) < min(max_size, max(handle.slide.dimensions)):
            side = max(2048, max_size)
            with handle.lock:
                handle.thumbnail = handle.slide.get_thumbnail((side, side)).convert("RGB")
        return handle.thumbnail

    # --- DeepZoom -------------------------------------------------------------------------------
    def dzi(self, entry: SlideEntry) -> str:
        return self._require(entry).deepzoom.get_dzi("jpeg")

    def tile(self, entry: SlideEntry, level: int, col: int, row: int) -> bytes:
        """A DeepZoom tile of the slide as JPEG; 404 for an address outside the pyramid."""
        handle = self._require(entry)
        dz = handle.deepzoom
        if not 0 <= level < dz.level_count:
            raise NotFound(f"invalid level {level} (0..{dz.level_count - 1})")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise NotFound(f"invalid tile address ({col}, {row}) at level {level}")
        with handle.lock:
            tile = dz.get_tile(level, (col, row))
        return _jpeg(tile, self.settings.tile_quality)

    def crop(self, entry: SlideEntry, x: int, y: int, size: int, out: int) -> bytes:
        """A level-0 square (x, y, size) of the slide, scaled to ``out`` px, as JPEG (gallery thumbnails).

        Reads from the coarsest level that still gives ``out`` pixels, so big crops stay cheap.
        """
        handle = self._require(entry)
        if size < 1 or size > MAX_CROP_LEVEL0 or out < 1 or out > MAX_CROP_OUT:
            raise NotFound(f"crop size must be 1..{MAX_CROP_LEVEL0} and out 1..{MAX_CROP_OUT}")
        slide = handle.slide
        if x >= slide.dimensions[0] or y >= slide.dimensions[1]:
            raise NotFound(f"crop at ({x}, {y}) lies outside the slide {slide.dimensions}")
        level = slide.get_best_level_for_downsample(max(size / out, 1.0))
        down = slide.level_downsamples[level]
        read = max(1, math.ceil(size / down))
        with handle.lock:
            region = slide.read_region((int(x), int(y)), level, (read, read))
        # Outside the slide read_region gives transparent pixels: show them white, like the glass.
        canvas = Image.new("RGB", region.size, (255, 255, 255))
        canvas.paste(region, mask=region.getchannel("A"))
        return _jpeg(canvas.resize((out, out), Image.Resampling.BILINEAR), self.settings.tile_quality)

    def close(self) -> None:
        for handle in list(self._handles._data.values()):
            handle.slide.close()


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mpp(props: Any) -> float | None:
    """µm/px from OpenSlide's properties, if plausible (a 72-dpi TIFF tag gives 352, which is not)."""
    values = [_float(props.get(k)) for k in ("openslide.mpp-x", "openslide.mpp-y")]
    values = [v for v in values if v is not None and 0.01 <= v <= 50]
    return sum(values) / len(values) if values else None
