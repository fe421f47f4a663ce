"""Which slides the service knows: feature files by stem, and the slide images that match them.

A slide id is always looked up in this registry (built from the folder listings), never turned into a
path, so ``../``, absolute paths and encoded variants cannot reach files outside the two folders.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acmil.features import list_feature_files

# Slide formats OpenSlide reads (plus plain TIFF, which open_slide serves through PIL).
SLIDE_EXTENSIONS = {
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm", ".czi",
}
RESCAN_INTERVAL_S = 2.0


@dataclass(frozen=True)
class SlideEntry:
    """One registered slide: its feature file, and its image when one was found."""

    slide_id: str
    features_path: Path
    image_path: Path | None


class SlideRegistry:
    """Slides with a feature file in ``features_dir``; images matched by stem in ``slides_dir``."""

    def __init__(self, features_dir: Path, slides_dir: Path | None = None) -> None:
        self.features_dir = Path(features_dir)
        self.slides_dir = Path(slides_dir) if slides_dir else None
        self._entries: dict[str, SlideEntry] = {}
        self._scanned_at = 0.0
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        """List both folders again (files may be added while the service runs)."""
        features = list_feature_files(self.features_dir)
        images: dict[str, Path] = {}
        if self.slides_dir is not None and self.slides_dir.is_dir():
            for path in sorted(self.slides_dir.iterdir()):
                if path.is_file() and path.suffix.lower() in SLIDE_EXTENSIONS:
                    images.setdefault(path.stem, path)
        entries = {sid: SlideEntry(sid, path, images.get(sid)) for sid, path in features.items()}
        with self._lock:
            self._entries = entries
            self._scanned_at = time.monotonic()

    def list(self) -> list[SlideEntry]:
        self._maybe_rescan()
        return list(self._entries.values())

    def get(self, slide_id: str) -> SlideEntry | None:
        """The entry for an id, or None. Unknown ids trigger at most one rescan every few seconds."""
        entry = self._entries.get(slide_id)
        if entry is None and self._maybe_rescan():
            entry = self._entries.get(slide_id)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def _maybe_rescan(self) -> bool:
        if time.monotonic() - self._scanned_at < RESCAN_INTERVAL_S:
            return False
        self.rescan()
        return True


class LRUCache:
    """A small thread-safe LRU mapping (OrderedDict under a lock)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Any, value: Any) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
