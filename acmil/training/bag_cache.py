"""Bags of patch features held in memory across epochs, within a byte budget.

Reading a small bag from its ``.h5`` file (open, read, close) costs more than a training step of a small
model, and every epoch reads every bag again. The cache keeps the first bags read until the budget is
spent and never evicts: under a shuffled order each epoch, an LRU of the same size hits just as often
and re-reads (and re-allocates) on every miss.
"""

from __future__ import annotations

import numpy as np
import psutil
from torch.utils.data import get_worker_info

AUTO_SHARE = 3  # cache="auto": at most a third of the memory available when the cohort is scanned


def available_memory() -> int:
    """Bytes of memory available to new allocations, the page cache included (psutil's MemAvailable): after
    preprocessing most memory is page cache, which the free pages alone would count as taken."""
    return int(psutil.virtual_memory().available)


class BagCache:
    """Cohort index -> (N, D) float32 features, up to ``budget`` bytes (None: no limit).

    Only the main process adds bags: a DataLoader worker's additions would live in that worker's copy alone,
    and with several workers each would end up holding the cohort. Bags added before the workers start
    (the cohort scan) are shared with them by fork, copy-on-write.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget, self.used = budget, 0
        self._bags: dict[int, np.ndarray] = {}

    @classmethod
    def for_mode(cls, mode: bool | str) -> BagCache | None:
        """The cache of a data module's ``cache`` option: True unbounded, "auto" a share of free memory, False none."""
        if mode == "auto":
            return cls(available_memory() // AUTO_SHARE)
        return cls() if mode else None

    def fits(self, nbytes: int) -> bool:
        return self.budget is None or self.used + nbytes <= self.budget

    def get(self, index: int) -> np.ndarray | None:
        return self._bags.get(index)

    def put(self, index: int, features: np.ndarray) -> None:
        if index in self._bags or get_worker_info() is not None or not self.fits(features.nbytes):
            return
        self._bags[index] = features
        self.used += features.nbytes

    def __contains__(self, index: int) -> bool:
        return index in self._bags

    def __len__(self) -> int:
        return len(self._bags)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._bags[index]
