"""Lightning's messages and every warning of a run go to ``RUN/train.log``, not to the user's terminal.

Lightning logs hardware lines ("GPU available: ..."), tips, the model summary and many warnings; a user
needs none of them to follow a run. They are kept in the run's log file (and also shown under
``--verbose``). Records are buffered until the run directory is known, then written to the file.
Light at import (no torch): the log is set up before Lightning is imported, so import-time warnings are
captured too.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLog(logging.Handler):
    """Buffers records until :meth:`open` names the log file, then writes them (and all later ones) there."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.buffer: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None
        self.path: Path | None = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(path, mode="a", encoding="utf-8", delay=False)
        self.file.setFormatter(self.formatter)
        self.path = path
        for record in self.buffer:
            self.file.handle(record)
        self.buffer.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is None:
            self.buffer.append(record)
        else:
            self.file.handle(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


_warnings_log = logging.getLogger("acmil.training.warnings")


@contextmanager
def captured_lightning_output(verbose: bool = False) -> Iterator[RunLog]:
    """Route Lightning's loggers and all warnings into a :class:`RunLog` for the duration of a run.

    With ``verbose`` the messages also reach stderr as usual.
    """
    sink = RunLog()
    saved_show = warnings.showwarning
    with warnings.catch_warnings():

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
            _warnings_log.warning("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())
            if verbose:
                saved_show(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        _warnings_log.addHandler(sink)
        _warnings_log.propagate = False
        import lightning.pytorch  # noqa: F401 - import now, under the capture: it installs its own handler

        loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
        saved = [(lg, list(lg.handlers), lg.propagate) for lg in loggers]
        for lg in loggers:
            lg.handlers = [sink] + ([h for h in lg.handlers if h is not sink] if verbose else [])
            lg.propagate = verbose and lg.propagate
        try:
            yield sink
        finally:
            for lg, handlers, propagate in saved:
                lg.handlers, lg.propagate = handlers, propagate
            _warnings_log.removeHandler(sink)
            sink.close()


def note(message: str) -> None:
    """A line for the user (stderr): what the run is doing, not how Lightning does it."""
    print(message, file=sys.stderr, flush=True)
