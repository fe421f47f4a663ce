"""What a user sees of a training run: progress with an estimate of the time left, on stderr.

On a terminal one tqdm bar covers the whole run (every step, the epoch and the latest validation metrics
in its postfix); otherwise (a log file, CI) one line per epoch, so the file is not garbled by redraws.
Lightning's own bar is used under ``acmil train --verbose``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

TABLE_ORDER = ("accuracy", "balanced_accuracy", "f1_macro", "auc")
SHOWN = (("train/loss", "loss"), ("val/loss", "val loss"), ("val/auc", "val auc"), ("val/f1_macro", "val f1"))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _columns(stream: TextIO) -> int:
    """The terminal's width; 100 where it reports none (a pty without a size draws an empty bar otherwise)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 100
    except (OSError, ValueError, AttributeError):
        return 100


class RunProgress(ProgressBar):
    """Epochs, steps and the time left of ``trainer.fit`` (see the module docstring)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self._enabled = True
        self._bar: Any = None
        self._start = 0.0
        self._first_epoch = 0
        self._pending: int | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def _metrics(self) -> str:
        values = self.trainer.callback_metrics
        parts = [f"{label} {float(values[key]):.3f}" for key, label in SHOWN if key in values]
        return ", ".join(parts)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start, self._first_epoch = time.monotonic(), trainer.current_epoch
        if not self.is_enabled:
            return
        if self.stream.isatty():
            from tqdm.auto import tqdm

            per_epoch = self.total_train_batches
            epochs = max(0, trainer.max_epochs - trainer.current_epoch) if trainer.max_epochs else 1
            total = per_epoch * epochs if isinstance(per_epoch, int) else None
            self._bar = tqdm(total=total, file=self.stream, unit="step", ncols=_columns(self.stream), leave=True)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._bar is not None:
            self._bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", refresh=False)
            self._bar.update(1)

    # The module logs the epoch's training loss in its own on_train_epoch_end, which Lightning calls after
    # the callbacks' hook: an epoch's line is written when the next epoch starts, or when training ends.
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._pending = trainer.current_epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._report(trainer)

    def _report(self, trainer: Any) -> None:
        epoch, self._pending = self._pending, None
        if epoch is None or not self.is_enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._metrics())
            return
        done = epoch + 1 - self._first_epoch
        elapsed = time.monotonic() - self._start
        line = f"epoch {epoch + 1}/{trainer.max_epochs}: {self._metrics()} ({_duration(elapsed)}"
        if trainer.max_epochs and trainer.max_epochs > epoch + 1:
            line += f", about {_duration(elapsed / done * (trainer.max_epochs - epoch - 1))} left"
        print(line + ")", file=self.stream, flush=True)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._report(trainer)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)


def metrics_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A small table of split x metric, three decimals (n/a for an empty split), then the bootstrap 95 % interval
    of each where ``metrics.json`` has one (``ci`` from :func:`acmil.evaluation.summarise`); nested entries such
    as calibration are left to metrics.json."""

    def interval(values: dict[str, Any], name: str) -> str:
        ci = ((values.get("ci") or {}).get("metrics") or {}).get(name) or {}
        low, high = ci.get("low"), ci.get("high")
        return f"[{low:.2f}, {high:.2f}]" if isinstance(low, int | float) and isinstance(high, int | float) else ""

    found = {k for split in metrics.values() for k, v in split.items() if isinstance(v, int | float)}
    names = [n for n in TABLE_ORDER if n in found] + sorted(found - set(TABLE_ORDER))
    if not names:
        return "no metrics (empty validation and test splits)"
    values = [[f"{v[n]:.3f}" if isinstance(v.get(n), int | float) else "n/a" for n in names] for v in metrics.values()]
    bands = [[interval(v, n) for n in names] for v in metrics.values()]
    widths = [max(5, len(n), *(len(r[i]) for r in values + bands)) for i, n in enumerate(names)]
    width = max(5, *map(len, metrics))

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))

    lines = [row("", names)] + [row(split, cells) for split, cells in zip(metrics, values, strict=True)]
    if any(c for r in bands for c in r):
        lines.append("bootstrap 95 % intervals:")
        lines += [row(split, cells) for split, cells in zip(metrics, bands, strict=True) if any(cells)]
    return "\n".join(lines)
