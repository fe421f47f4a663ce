"""Tile reading in DataLoader workers.

The "sampler" yields self-describing :class:`ReadJob` s (a slide, a read level and a chunk of coordinates), so
one DataLoader serves a whole stream of slides: while the main process encodes slide k, the workers are already
reading the first batches of slide k+1 (``prefetch_factor`` batches per worker). Each worker keeps its open
slides in a small cache. A read error is returned as data, not raised, so one corrupt slide does not stop the
loader; the main process marks that slide failed and ignores its remaining batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .slide import Slide


@dataclass
class ReadJob:
    """One batch of tiles to read.

    Attributes:
        slide: the slide (pickled without its open handle; the worker reopens it).
        batch_index: position of this batch within the slide.
        coords: (B, 2) int64 level-0 (x, y).
        level: pyramid level to read from.
        read_size: side of the box at ``level`` (in that level's pixels).
        tile_size: side of the tiles delivered (the encoder's input size): one resize from ``read_size``.
    """

    slide: Slide
    batch_index: int
    coords: np.ndarray
    level: int
    read_size: int
    tile_size: int


def read_tile(slide: Slide, x: int, y: int, level: int, read_size: int, tile_size: int) -> np.ndarray:
    """(tile_size, tile_size, 3) uint8: the box read at ``level`` then resized (area when shrinking)."""
    img = slide.read_region(x, y, level, read_size, read_size)
    if read_size != tile_size:
        interp = cv2.INTER_AREA if read_size > tile_size else cv2.INTER_LINEAR
        img = cv2.resize(img, (tile_size, tile_size), interpolation=interp)
    return img


class TileReader(Dataset):
    """Map-style dataset whose "indices" are :class:`ReadJob` s.

    ``reader[job]`` -> (slide_id, batch_index, tiles uint8 (B, T, T, 3) tensor, error message or "").
    """

    def __init__(self, cache_size: int = 4) -> None:
        self.cache_size = cache_size
        self._open: OrderedDict[str, Slide] = OrderedDict()

    def _slide(self, slide: Slide) -> Slide:
        key = str(slide.path)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        self._open[key] = slide
        while len(self._open) > self.cache_size:
            self._open.popitem(last=False)[1].close()
        return slide

    def __len__(self) -> int:  # streamed: the length is not known in advance
        raise TypeError("TileReader is indexed by ReadJob objects; it has no length")

    def __getitem__(self, job: ReadJob) -> tuple[str, int, torch.Tensor, str]:
        out = np.empty((len(job.coords), job.tile_size, job.tile_size, 3), np.uint8)
        try:
            slide = self._slide(job.slide)
            for i, (x, y) in enumerate(job.coords):
                out[i] = read_tile(slide, int(x), int(y), job.level, job.read_size, job.tile_size)
        except Exception as err:  # noqa: BLE001 - reported to the main process as data (see module doc)
            self._open.pop(str(job.slide.path), None)
            return job.slide.slide_id, job.batch_index, torch.empty(0, dtype=torch.uint8), str(err)
        return job.slide.slide_id, job.batch_index, torch.from_numpy(out), ""


class JobStream(torch.utils.data.Sampler):
    """Wraps an iterable of ReadJobs as a DataLoader sampler (consumed lazily, in the main process)."""

    def __init__(self, jobs: Iterable[ReadJob]) -> None:
        self.jobs = jobs

    def __iter__(self) -> Iterator[ReadJob]:
        return iter(self.jobs)


def worker_init(_: int) -> None:
    """Readers leave the cores to the encoder. (Not cv2.setNumThreads: called in a forked child after the parent
    used both OpenCV and torch threads, it deadlocks.)"""
    torch.set_num_threads(1)


def make_loader(
    jobs: Iterable[ReadJob], workers: int, pin_memory: bool = False, prefetch_factor: int = 4
) -> torch.utils.data.DataLoader:
    """A DataLoader over a stream of ReadJobs (batch_size=None: each job already is a batch)."""
    kwargs = {}
    if workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor, "worker_init_fn": worker_init, "persistent_workers": False}
    return torch.utils.data.DataLoader(
        TileReader(), batch_size=None, sampler=JobStream(jobs), num_workers=workers, pin_memory=pin_memory, **kwargs
    )
