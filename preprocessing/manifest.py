"""manifest.csv: one row per slide (the latest outcome), updated after every slide.

Several processes (``--devices``, ``--shard`` jobs, or two runs on one ``--out``) may share an output folder, so
each update takes an exclusive lock (``filelock``), re-reads the file, replaces the rows of its slides and renames a
new file into place: the manifest is always whole and keeps the rows of slides other runs processed. When the
disk is full the old manifest stays as it was and :class:`ManifestRecorder` keeps the rows it could not write.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from filelock import FileLock

from acmil.atomic import write_csv
from acmil.features import disk_error


@dataclass(kw_only=True)
class SlideOutcome:
    """The outcome of one slide (a manifest row)."""

    slide_id: str
    path: str
    status: str  # "ok", "skipped" (complete output with the same parameters) or "failed"
    n_tiles: int = 0
    tissue_mm2: float = 0.0
    mpp: float | None = None
    read_level: int | None = None
    seconds: float = 0.0
    error: str = ""
    params_hash: str = ""

    def row(self) -> dict:
        d = asdict(self)
        d["tissue_mm2"] = f"{self.tissue_mm2:.4f}"
        d["seconds"] = f"{self.seconds:.2f}"
        d["mpp"] = "" if self.mpp is None else f"{self.mpp:.6g}"
        d["read_level"] = "" if self.read_level is None else str(self.read_level)
        d["error"] = " ".join(self.error.split())  # one line per row
        return d


COLUMNS = [f.name for f in fields(SlideOutcome)]


def read_manifest(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def update_manifest(path: str | os.PathLike, results: list[SlideOutcome]) -> None:
    """Insert or replace the rows of ``results`` (by slide_id) under a lock; atomic rename.

    Raises:
        DiskFullError / OSError: naming the manifest; the file with the final name is then unchanged.
    """
    path = Path(path)
    try:
        with FileLock(path.with_name(f".{path.name}.lock"), thread_local=False):
            rows = {r["slide_id"]: r for r in read_manifest(path)}
            for res in results:
                rows[res.slide_id] = res.row()
            write_csv(path, [rows[sid] for sid in sorted(rows)], COLUMNS)  # missing columns: empty
    except OSError as err:
        raise disk_error(err, path) from err


class ManifestRecorder:
    """``on_result`` callback that records each result; rows that could not be written (a full disk) are kept
    and retried with the next result, so one failed write loses no row that a later write can still save."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.unwritten: list[SlideOutcome] = []
        self.error: OSError | None = None

    def __call__(self, res: SlideOutcome) -> None:
        self.unwritten.append(res)
        try:
            update_manifest(self.path, self.unwritten)
        except OSError as err:
            self.error = err
            return
        self.unwritten, self.error = [], None
