"""The service side of slide jobs: submitting (checked, deduplicated, limited), the embedded huey consumer,
the ``--watch`` folder, and ``install(app, settings)``, the one line ``create_app`` calls.

Folders under the jobs data folder (``Settings.jobs_dir``, default ``<features_dir>/.jobs``):
``queue.sqlite3`` (huey's queue and the job records), ``uploads/`` (uploaded slides, named by their
content hash, never by the client), ``cache/`` (feature files by recipe and content). A finished job's slide
is published into ``features_dir`` and ``slides_dir`` (default ``<jobs_dir>/slides``) under its slide id.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from .jobs_queue import TERMINAL, JobStore, enqueue, make_huey, preload, public_view, recover
from .jobs_submit import JobError
from .registry import SLIDE_EXTENSIONS

log = logging.getLogger("uvicorn.error")
WATCH_INTERVAL_S = 1.0


def safe_slide_id(name: str) -> str:
    """A slide id from a client's file name: its stem, reduced to letters, digits and ``._-``; never a path."""
    stem = Path(str(name).replace("\\", "/").rsplit("/", 1)[-1]).stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80]
    return cleaned or "slide"


class JobService:
    """Submits and lists jobs; owns the queue, the store and (embedded) the consumer."""

    def __init__(self, settings, engine=None) -> None:  # noqa: ANN001
        self.settings = settings
        self.data_dir = Path(settings.jobs_dir or Path(settings.features_dir) / ".jobs")
        self.uploads = self.data_dir / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.huey = make_huey(settings.queue_url, self.data_dir)
        self.store = JobStore(self.huey)
        self.engine = engine
        self._submit_lock = threading.Lock()
        self._consumer = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------ submitting
    def check_client_limit(self, client: str) -> None:
        active = sum(1 for j in self.store.list() if j.get("client") == client and j.get("state") not in TERMINAL)
        if active >= self.settings.max_queued_jobs_per_client:
            raise JobError(
                429,
                f"{active} jobs of yours are queued or running (limit "
                f"{self.settings.max_queued_jobs_per_client}); wait for one to finish",
            )

    def uploads_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.uploads.iterdir() if p.is_file())

    def submit(self, slide_path: Path, name: str, content_hash: str, source: str, client: str) -> tuple[dict, bool]:
        """Queue a job for a checked slide (or return the job of the same content); (job view, created)."""
        job_id = content_hash[:24]
        with self._submit_lock:
            job = self.store.get(job_id)
            if job is not None and job.get("state") not in ("failed", "cancelled"):
                return public_view(job), False
            self.check_client_limit(client)
            slide_id = job["slide_id"] if job else self._free_slide_id(safe_slide_id(name), content_hash)
            payload = {
                "job_id": job_id,
                "slide_path": str(slide_path),
                "slide_id": slide_id,
                "content_hash": content_hash,
                "checkpoint": [str(c) for c in self.settings.checkpoint],  # several: an ensemble
                "device": self.settings.device,
                "features_dir": str(self.settings.features_dir),
                "slides_dir": str(self.settings.slides_dir),
                "work_dir": str(self.data_dir),
                "weights_file": self.settings.encoder_weights,
            }
            self.store.clear_cancel(job_id)
            record = {
                "job_id": job_id,
                "slide_id": slide_id,
                "state": "queued",
                "progress": 0.0,
                "source": source,
                "client": client,
                "created": time.time(),
                "payload": payload,
                "attempts": int(job.get("attempts", 0)) if job else 0,
            }
            self.store.put(record)
            enqueue(self.huey, payload)
            return public_view(record), True

    def _free_slide_id(self, wanted: str, content_hash: str) -> str:
        """``wanted``, or ``wanted-<hash8>`` when another slide already has that id."""
        taken = {j.get("slide_id") for j in self.store.list()}
        features = Path(self.settings.features_dir)
        if wanted in taken or (features / f"{wanted}.h5").exists():
            return f"{wanted}-{content_hash[:8]}"
        return wanted

    def cancel(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(404, f"no job {job_id!r}")
        if job.get("state") in TERMINAL:
            return public_view(job)
        self.store.ask_cancel(job_id)
        if job.get("state") == "queued":  # not started: no worker will write it again (it checks the flag)
            job = self.store.update(job_id, state="cancelled", finished=time.time(), message="cancelled")
        return public_view(job)

    # ------------------------------------------------------------ running
    def start(self) -> None:
        requeued = recover(self.huey, self.store)
        if requeued:
            log.info("slide jobs: %d interrupted job(s) queued again: %s", len(requeued), ", ".join(requeued))
        if self.settings.embedded_worker:
            from huey.consumer import Consumer

            class EmbeddedConsumer(Consumer):
                def _set_signal_handlers(self) -> None:  # uvicorn owns the signals of this process
                    pass

            if self.engine is not None:
                preload(self.settings.checkpoint, self.settings.device, self.engine.ensemble)
                threading.Thread(target=self._warm, name="acmil-jobs-warm", daemon=True).start()
            self._consumer = EmbeddedConsumer(
                self.huey, workers=1, worker_type="thread", periodic=False, check_worker_health=False
            )
            self._consumer.start()
        if self.settings.watch_dir is not None:
            self._watcher = threading.Thread(target=self._watch, name="acmil-watch", daemon=True)
            self._watcher.start()

    def _warm(self) -> None:
        """Build the recipe's encoder at start-up, so the first job does not wait for it."""
        from .jobs_queue import _encoder, _resources

        try:
            _encoder(
                _resources(self.settings.checkpoint, self.settings.device),
                self.settings.device,
                self.settings.encoder_weights,
            )
        except Exception as err:  # noqa: BLE001 - an incomplete recipe fails each job with the message
            log.warning("slide jobs: the model's recipe cannot be reproduced here: %s", err)

    def stop(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=False)

    def _watch(self) -> None:
        """Queue every slide that appears in the watch folder once its size and mtime stopped changing."""
        from .jobs_submit import submit_existing

        folder = Path(self.settings.watch_dir)
        seen: dict[Path, tuple[int, float]] = {}
        done: set[tuple[Path, int, float]] = set()
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                paths = [
                    p
                    for p in folder.rglob("*")
                    if p.is_file() and p.suffix.lower() in SLIDE_EXTENSIONS and not p.name.startswith(".")
                ]
            except OSError:
                continue
            for path in paths:
                try:
                    st = path.stat()
                except OSError:
                    continue
                sig = (st.st_size, st.st_mtime)
                if seen.get(path) != sig:  # new or still growing
                    seen[path] = sig
                    continue
                if (path, *sig) in done:
                    continue
                done.add((path, *sig))
                try:
                    view, _ = submit_existing(self, path, source="watch", client="watch")
                    log.info("watch: %s -> job %s (%s)", path.name, view["job_id"], view["state"])
                except JobError as err:
                    log.warning("watch: %s not queued: %s", path.name, err.message)
                except Exception as err:  # noqa: BLE001 - one bad file never stops the watcher
                    log.warning("watch: %s not queued: %s", path.name, err)


def install(app: FastAPI, settings, prefix: str) -> None:  # noqa: ANN001
    """Add the job routes, and start the job service with the app (after the engine is up)."""
    from .routers import jobs

    if settings.slides_dir is None:  # finished jobs need a place where the registry finds their images
        settings.slides_dir = Path(settings.jobs_dir or Path(settings.features_dir) / ".jobs") / "slides"
        Path(settings.slides_dir).mkdir(parents=True, exist_ok=True)
    app.include_router(jobs.router, prefix=prefix)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            service = None
            try:
                service = JobService(settings, getattr(app_.state, "engine", None))
                service.start()
            except Exception as err:  # noqa: BLE001 - the rest of the service works without jobs
                log.warning("slide jobs are off: %s", err)
                service = None
            app_.state.jobs = service
            try:
                yield state
            finally:
                if service is not None:
                    service.stop()

    app.router.lifespan_context = lifespan
