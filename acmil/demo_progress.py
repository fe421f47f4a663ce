"""Progress lines of ``acmil demo``'s training stages (a Lightning callback, kept apart so ``acmil.demo`` imports
without Lightning)."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback

from acmil.demo import duration


class EpochProgress(Callback):
    """One line per tenth of the epochs: epochs done, time so far, and an estimate of the time left.

    Args:
        label: what the line starts with (e.g. ``train ACMIL``).
        every: report every this fraction of the epochs.
    """

    def __init__(self, label: str = "train", every: float = 0.1) -> None:
        self.label, self.every = label, every
        self.start = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        done, total = trainer.current_epoch + 1, int(trainer.max_epochs or 0)
        step = max(1, round(total * self.every))
        if total <= 0 or not (done == 1 or done % step == 0 or done == total):  # the first, every step, the last
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / done * (total - done)
        print(
            f"[demo] {self.label}: epoch {done}/{total}, {duration(elapsed)}"
            + (f", about {duration(left)} left" if done < total else ""),
            flush=True,
        )
