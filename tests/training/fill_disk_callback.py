"""A Lightning callback for the disk-full test: fills the run's file system when the second epoch starts."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from tests.helpers.disk_full import fill


class FillDiskAtSecondEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            fill(Path(trainer.default_root_dir), leave=16 * 1024)  # room for logs, not for a checkpoint
