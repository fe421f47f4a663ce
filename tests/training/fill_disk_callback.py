"""A Lightning callback for the disk-full test: fills the run's file system when the second epoch starts."""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from disk_full import fill  # noqa: E402


class FillDiskAtSecondEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            fill(Path(trainer.default_root_dir), leave=16 * 1024)  # room for logs, not for a checkpoint
