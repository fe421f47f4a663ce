"""``--trainer.callbacks+=epoch_clock.EpochClock`` (with ``benchmarks/`` on PYTHONPATH): the process CPU seconds of
each whole epoch of a training run (training, validation, checkpoints, logging: from one epoch's start to the
next one's, or to the end of training), written as JSON to the file named by ``$ACMIL_BENCH_EPOCHS``. Used by
``bench_train_overhead.py``; it uses only public hooks, so it also times older source trees."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class EpochClock(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.start: float | None = None

    def _lap(self) -> None:
        now = time.process_time()
        if self.start is not None:
            self.times.append(now - self.start)
        self.start = now

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._lap()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._lap()
        Path(os.environ["ACMIL_BENCH_EPOCHS"]).write_text(json.dumps(self.times))
