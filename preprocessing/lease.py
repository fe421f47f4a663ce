"""Per-slide leases, so several ``acmil preprocess`` runs on one ``--out`` split the slides instead of fighting.

A run works on a slide (cleans its leftovers, checks resume, writes its files) only while it holds the slide's
lease: an exclusive ``filelock`` on ``OUT/.locks/<slide_id>.lock``. The operating system drops the lock when its
process dies (kill -9 included), so a lease never outlives its run and a leftover temporary file of a slide whose
lease we hold is known to be stale. A run that finds a slide leased by another run defers it and, after its own
work, waits for that lease: by then the slide is usually complete and is reported as skipped.

A slide's leftover temporary files are found by the modules that write them (:func:`acmil.atomic.leftovers` for
the feature file and the GeoJSON, :func:`.qc.qc_leftovers` for the picture), by exact name, never by a glob
pattern built from the slide id: a slide named ``*`` must not match the files of other slides.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from acmil.atomic import leftovers
from acmil.features import disk_error

from .qc import qc_leftovers


class SlideLeases:
    """Leases of the slides of one output folder."""

    def __init__(self, out: Path) -> None:
        self.folder = Path(out) / ".locks"
        self.folder.mkdir(parents=True, exist_ok=True)

    def acquire(self, slide_id: str, wait: bool = False) -> FileLock | None:
        """The slide's lease (held), or None when another run holds it and ``wait`` is False."""
        # thread_local=False: the planner thread takes the lease, the main thread releases it.
        lock = FileLock(self.folder / f"{slide_id}.lock", thread_local=False)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return None
        except OSError as err:  # creating the lock file on a full disk
            raise disk_error(err, lock.lock_file) from err
        return lock


def stale_partials(folder: Path, slide_id: str) -> list[Path]:
    """Temporary files of ``slide_id``'s outputs (``<id>.h5``, ``<id>.png``, ``<id>.geojson``) in ``folder``."""
    folder = Path(folder)
    return [
        *leftovers(folder / f"{slide_id}.h5"),
        *qc_leftovers(folder / f"{slide_id}.png"),
        *leftovers(folder / f"{slide_id}.geojson"),
    ]


def remove_stale_partials(out: Path, slide_id: str) -> None:
    """Delete what a killed run left of this slide (call only while holding its lease)."""
    for folder in (Path(out) / "features", Path(out) / "qc"):
        for path in stale_partials(folder, slide_id):
            path.unlink(missing_ok=True)
