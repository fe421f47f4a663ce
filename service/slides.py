"""Slide images through OpenSlide: metadata, thumbnails, DeepZoom tiles and tile crops.

A slide's image is optional: every method answers sensibly (None or 404) when a slide has only its
feature file, or when its image cannot be opened (the reason is kept and shown in the metadata).

Open handles live in an LRU cache (:mod:`cachetools`) keyed by path and checked against the file's size
and mtime on each use: a replaced or restored file is opened again. OpenSlide handles are unusable after
any read error, so a failed read drops its handle (the next request reopens the file) and answers that
request with a clear 422; the other tiles keep working. Dropped and evicted handles are closed once no
request is using them.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from acmil.geometry import plausible_mpp

from .caches import LockedLRU
from .errors import BadInput, NotFound
from .registry import SlideEntry

MAX_CROP_LEVEL0 = 8192  # a tile crop may span at most this many level-0 pixels
MAX_CROP_OUT = 1024


def _file_state(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it cannot be stat'ed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def public_error(err: BaseException, entry: SlideEntry) -> str:
    """An OpenSlide/PIL error's text with the server-side path (and folder) of the image removed."""
    text = str(err) or type(err).__name__
    path = entry.image_path
    if path is not None:
        candidates = {str(path), str(path.resolve()), str(path.parent), str(path.resolve().parent)}
        for candidate in sorted(candidates, key=len, reverse=True):  # whole paths first, then folders
            text = text.replace(candidate, "<slide image>" if candidate.endswith(path.name) else "<slides>")
    return text


@dataclass
class _Handle:
    slide: Any  # openslide.OpenSlide or openslide.ImageSlide
    deepzoom: Any  # openslide.deepzoom.DeepZoomGenerator
    lock: Any  # PIL-backed ImageSlide is not thread-safe; OpenSlide is
    state: tuple[int, int] | None  # the file's (size, mtime_ns) when opened
    thumbnail: Image.Image | None = None
    users: int = 0
    retired: bool = False
    guard: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> bool:
        """Count a user in; False when the handle was retired meanwhile (the caller opens a new one)."""
        with self.guard:
            if self.retired:
                return False
            self.users += 1
            return True

    def leave(self) -> None:
        with self.guard:
            self.users -= 1
            close = self.retired and self.users == 0
        if close:
            self.slide.close()

    def retire(self) -> None:
        """Close now if unused, else when the last user leaves (closing under a reader would crash it)."""
        with self.guard:
            if self.retired:
                return
            self.retired = True
            close = self.users == 0
        if close:
            self.slide.close()


class SlideImages:
    """Open slide handles (LRU) and the image operations the routers need."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._handles = LockedLRU(settings.slide_cache_size, on_evict=_Handle.retire)
        self._errors = LockedLRU(1024)  # (path, size, mtime) -> why the image cannot be opened
        self._open_lock = threading.Lock()

    def _current(self, entry: SlideEntry) -> _Handle | None:
        """An open handle for the image as it is on disk now, or None (no image, or it cannot be opened)."""
        if entry.image_path is None:
            return None
        key = str(entry.image_path)
        state = _file_state(entry.image_path)
        handle = self._handles.get(key)
        if handle is not None and handle.state == state:
            return handle
        if self._errors.get((key, state)) is not None:
            return None
        with self._open_lock:
            handle = self._handles.get(key)
            if handle is not None and handle.state != state:  # replaced, truncated or restored since opened
                self._drop(key, handle)
                handle = None
            if handle is None and self._errors.get((key, state)) is None:
                handle = self._open(entry, state)
        return handle

    @contextmanager
    def _using(self, entry: SlideEntry, required: bool = True) -> Iterator[_Handle | None]:
        """The slide's handle for the duration of a read; a read error drops it and becomes a 422."""
        for _ in range(3):  # a handle retired between lookup and use is replaced by a fresh one
            handle = self._current(entry)
            if handle is None:
                if required:
                    raise NotFound(f"slide {entry.slide_id!r}: {self.error(entry) or 'no slide image for this slide'}")
                yield None
                return
            if handle.enter():
                break
        else:
            raise BadInput(f"slide {entry.slide_id!r}: its image keeps changing; try again")
        try:
            yield handle
        except (NotFound, BadInput):
            raise
        except Exception as err:  # noqa: BLE001 - OpenSlide/PIL raise many types for unreadable image data
            self._drop(str(entry.image_path), handle)
            raise BadInput(
                f"slide {entry.slide_id!r}: cannot read this part of the slide image ({public_error(err, entry)})"
            ) from err
        finally:
            handle.leave()

    def _drop(self, key: str, handle: _Handle) -> None:
        self._handles.pop_if(key, handle)
        handle.retire()

    def _open(self, entry: SlideEntry, state: tuple[int, int] | None) -> _Handle | None:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        key = str(entry.image_path)
        slide = None
        try:
            with warnings.catch_warnings():  # PIL warns about odd TIFF tags while it falls back; the error says enough
                warnings.simplefilter("ignore")
                slide = openslide.open_slide(key)
            deepzoom = DeepZoomGenerator(slide, self.settings.tile_size, self.settings.tile_overlap, limit_bounds=False)
        except Exception as err:  # noqa: BLE001 - OpenSlide/PIL raise many types for a bad file
            if slide is not None:
                slide.close()
            self._errors.put((key, state), f"cannot open the slide image: {public_error(err, entry)}")
            return None
        lock = nullcontext() if isinstance(slide, openslide.OpenSlide) else threading.Lock()
        handle = _Handle(slide, deepzoom, lock, state)
        self._handles.put(key, handle)
        return handle

    def error(self, entry: SlideEntry) -> str | None:
        """Why the slide's image (as it is on disk now) cannot be opened, if it cannot."""
        if entry.image_path is None:
            return None
        return self._errors.get((str(entry.image_path), _file_state(entry.image_path)))

    # --- metadata -------------------------------------------------------------------------------
    def info(self, entry: SlideEntry) -> dict[str, Any]:
        try:
            with self._using(entry, required=False) as handle:
                if handle is None:
                    return {"has_image": False, "error": self.error(entry)}
                props = handle.slide.properties
                return {
                    "has_image": True,
                    "mpp": _mpp(props),
                    "vendor": props.get("openslide.vendor"),
                    "level_count": handle.slide.level_count,
                    "objective_power": _float(props.get("openslide.objective-power")),
                }
        except BadInput as err:
            return {"has_image": False, "error": err.message}

    def dimensions(self, entry: SlideEntry) -> tuple[int, int] | None:
        try:
            with self._using(entry, required=False) as handle:
                return tuple(handle.slide.dimensions) if handle else None  # type: ignore[return-value]
        except BadInput:
            return None

    def thumbnail(self, entry: SlideEntry, max_size: int) -> Image.Image | None:
        """The whole slide at most ``max_size`` px on its longer side (kept at up to 2048 px), or None."""
        with self._using(entry, required=False) as handle:
            if handle is None:
                return None
            if handle.thumbnail is None or max(handle.thumbnail.size) < min(max_size, max(handle.slide.dimensions)):
                side = max(2048, max_size)
                with handle.lock:
                    handle.thumbnail = handle.slide.get_thumbnail((side, side)).convert("RGB")
            return handle.thumbnail

    # --- DeepZoom -------------------------------------------------------------------------------
    def dzi(self, entry: SlideEntry) -> str:
        with self._using(entry) as handle:
            return handle.deepzoom.get_dzi("jpeg")

    def tile(self, entry: SlideEntry, level: int, col: int, row: int) -> bytes:
        """A DeepZoom tile of the slide as JPEG; 404 for an address outside the pyramid, 422 if unreadable."""
        with self._using(entry) as handle:
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
        if size < 1 or size > MAX_CROP_LEVEL0 or out < 1 or out > MAX_CROP_OUT:
            raise NotFound(f"crop size must be 1..{MAX_CROP_LEVEL0} and out 1..{MAX_CROP_OUT}")
        with self._using(entry) as handle:
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
        """Close every handle (each as soon as no request uses it)."""
        self._handles.clear()


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
    values = [plausible_mpp(props.get(k)) for k in ("openslide.mpp-x", "openslide.mpp-y")]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
