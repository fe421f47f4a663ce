"""Which slides the service knows: feature files by stem, and the slide images that match them.

A slide id is always looked up in this registry (built from the folder listings), never turned into a
path, so ``../``, absolute paths and encoded variants cannot reach files outside the two folders.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from acmil.features import FeatureFileError, list_feature_files
from acmil.geometry import SLIDE_EXTENSIONS

log = logging.getLogger("uvicorn.error")

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
        self.problem: str | None = None  # set while the features folder cannot be listed
        self._scanned_at = 0.0
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self) -> None:
        """List both folders again (files may be added while the service runs).

        A features folder that has gone (renamed, unmounted) empties the registry and sets :attr:`problem`
        until it is back; the service then answers 503 rather than failing on every request.
        """
        problem = None
        try:
            features = list_feature_files(self.features_dir)
        except (FeatureFileError, OSError) as err:
            features, problem = {}, "the features folder is not available (renamed, removed or unmounted)"
            if self.problem is None:
                log.warning("cannot list the features folder %s: %s", self.features_dir, err)
        images: dict[str, Path] = {}
        if self.slides_dir is not None:
            try:
                for path in sorted(self.slides_dir.iterdir()):
                    if path.is_file() and path.suffix.lower() in SLIDE_EXTENSIONS:
                        images.setdefault(path.stem, path)
            except OSError:  # no slides folder (now): slides are served without their image
                images = {}
        entries = {sid: SlideEntry(sid, path, images.get(sid)) for sid, path in features.items()}
        with self._lock:
            self._entries = entries
            self.problem = problem
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
