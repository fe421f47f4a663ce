"""Slide jobs on a huey task queue: the queue, the job store and the task that turns a slide into a prediction.

The queue is huey's: ``SqliteHuey`` in a file of the service's data folder by default (no server; a consumer
thread in ``acmil serve`` runs the tasks), or ``RedisHuey`` for ``--queue redis://...`` with ``acmil worker``
processes on other machines (paths are shared: the workers read the slide and write the results where the
server serves them).

Job state lives in huey's own key-value storage (the ``kv`` table of the SQLite file, a Redis hash),
next to the queue: every worker that can take a task can also report on it, whatever the backend, and
there is no second database to run or keep consistent. Only the worker running a job writes its state;
the server writes a job once (queued) and asks for cancellation under a separate key, so the two never
overwrite each other's fields.

States: queued -> reading -> segmenting -> encoding (k/N tiles) -> predicting -> done, or failed (message),
or cancelled. The published files are written atomically (feature file last), so nothing half-written is
ever served; a job whose worker died (``kill -9``) is queued again when the server starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from acmil.atomic import atomic_path

log = logging.getLogger("acmil.jobs")
TERMINAL = ("done", "failed", "cancelled")
RUNNING = ("reading", "segmenting", "encoding", "predicting")
JOB_PREFIX = "acmil-job:"
CANCEL_PREFIX = "acmil-cancel:"
TASK_NAME = "acmil.slide_job"
STALE_S = 300.0  # a job on another machine whose worker said nothing for this long is taken to be dead
# Share of the progress bar before each stage; encoding fills 0.05 .. 0.95 tile by tile.
STAGE_START = {"queued": 0.0, "reading": 0.01, "segmenting": 0.03, "encoding": 0.05, "predicting": 0.95, "done": 1.0}


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was asked for."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_huey(queue_url: str | None, data_dir: Path):  # noqa: ANN201 - a huey.Huey
    """SqliteHuey in ``data_dir/queue.sqlite3`` (default) or RedisHuey for a ``redis://`` URL."""
    from huey import RedisHuey, SqliteHuey

    if queue_url and queue_url.startswith(("redis://", "rediss://", "unix://")):
        huey = RedisHuey("acmil-jobs", url=queue_url, results=False)
    elif queue_url:
        raise ValueError(f"--queue {queue_url!r}: give redis://HOST:PORT/DB (or nothing for the embedded SQLite queue)")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey("acmil-jobs", filename=str(data_dir / "queue.sqlite3"), results=False)

    def slide_job(payload: dict[str, Any]) -> None:
        run_slide_job(huey, payload)

    huey.acmil_task = huey.task(name=TASK_NAME, retries=0)(slide_job)
    return huey


def enqueue(huey, payload: dict[str, Any]) -> str:  # noqa: ANN001
    """Put one job's task on the queue; returns huey's task id."""
    task = huey.acmil_task.s(payload)
    huey.enqueue(task)
    return task.id


class JobStore:
    """Job records (plain dicts) in huey's key-value storage."""

    def __init__(self, huey) -> None:  # noqa: ANN001
        self.huey = huey
        self._lock = threading.Lock()

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.huey.get(JOB_PREFIX + job_id, peek=True)

    def put(self, job: dict[str, Any]) -> dict[str, Any]:
        job["updated"] = time.time()
        self.huey.put(JOB_PREFIX + job["job_id"], job)
        return job

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            job = self.get(job_id) or {"job_id": job_id}
            job.update(fields)
            return self.put(job)

    def list(self) -> list[dict[str, Any]]:
        items = self.huey.storage.result_items()
        jobs = [
            self.huey.serializer.deserialize(v)
            for k, v in items.items()
            if (k.decode() if isinstance(k, bytes) else k).startswith(JOB_PREFIX)
        ]
        return sorted(jobs, key=lambda j: j.get("created", 0))

    def ask_cancel(self, job_id: str) -> None:
        self.huey.put(CANCEL_PREFIX + job_id, True)

    def clear_cancel(self, job_id: str) -> None:
        self.huey.delete(CANCEL_PREFIX + job_id)

    def cancel_asked(self, job_id: str) -> bool:
        return bool(self.huey.get(CANCEL_PREFIX + job_id, peek=True))


def public_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it: state, progress, elapsed and estimated time left (no server paths)."""
    now = time.time()
    started, finished = job.get("started"), job.get("finished")
    elapsed = ((finished or now) - started) if started else 0.0
    progress = float(job.get("progress", 0.0))
    eta = elapsed * (1 - progress) / progress if job.get("state") in RUNNING and progress > 0.02 else None
    stage = job.get("state")
    if stage == "encoding" and job.get("tiles_total"):
        stage = f"encoding {job.get('tiles_done', 0)}/{job['tiles_total']} tiles"
    keys = (
        "job_id",
        "slide_id",
        "state",
        "message",
        "prediction",
        "created",
        "started",
        "finished",
        "attempts",
        "tiles_done",
        "tiles_total",
        "worker",
        "source",
        "seconds",
        "history",
    )
    view = {k: job.get(k) for k in keys}
    view.update(
        stage=stage,
        progress=round(progress, 4),
        elapsed_s=round(elapsed, 2),
        eta_s=None if eta is None else round(eta, 1),
    )
    return view


def worker_gone(job: dict[str, Any]) -> bool:
    """Whether a job that says it is running has lost its worker (a dead process here, or silence elsewhere)."""
    host, _, pid = str(job.get("worker") or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - float(job.get("updated", 0)) > STALE_S


def recover(huey, store: JobStore) -> list[str]:  # noqa: ANN001
    """Queue again every job that is not finished and not on the queue (its worker was killed)."""
    pending = set()
    for task in huey.pending():
        payload = task.args[0] if task.args else {}
        pending.add(payload.get("job_id"))
    requeued = []
    for job in store.list():
        state = job.get("state")
        if state in TERMINAL or job["job_id"] in pending:
            continue
        if state in RUNNING and not worker_gone(job):
            continue
        store.update(job["job_id"], state="queued", progress=0.0, message=f"requeued after an interrupted {state}")
        enqueue(huey, job["payload"])
        requeued.append(job["job_id"])
    return requeued


# ---------------------------------------------------------------- the task (runs in a worker)

DEVICE_OVERRIDE: str | None = None  # acmil worker --device
_RESOURCES: dict[tuple[str, str], dict[str, Any]] = {}
_RESOURCES_LOCK = threading.Lock()


def _key(checkpoint: str | Path | list, device: str) -> tuple[tuple[str, ...], str]:
    """A payload's checkpoint(s) (one path, as older payloads hold, or a list) and device as a dict key."""
    paths = checkpoint if isinstance(checkpoint, (list, tuple)) else [checkpoint]
    return tuple(str(p) for p in paths), device


def preload(checkpoint: str | Path | list, device: str, ensemble) -> None:  # noqa: ANN001
    """Give the embedded worker the server's own loaded model or ensemble (one load per process)."""
    with _RESOURCES_LOCK:
        _RESOURCES.setdefault(_key(checkpoint, device), {"loaded": ensemble})


def _resources(checkpoint: str | Path | list, device: str) -> dict[str, Any]:
    """The model (an :class:`~acmil.ensemble.Ensemble`, of one or more) and the recipe's encoder of this
    worker process, loaded once."""
    from acmil.ensemble import load_ensemble

    key = _key(checkpoint, device)
    with _RESOURCES_LOCK:
        res = _RESOURCES.setdefault(key, {})
        if "loaded" not in res:
            res["loaded"] = load_ensemble(list(key[0]), map_location="cpu").to(device)
        return res


def _encoder(res: dict[str, Any], device: str, weights_file: str | None):  # noqa: ANN202
    from acmil.preprocessing.api import recipe_encoder

    with _RESOURCES_LOCK:
        if "encoder" not in res:
            res["encoder"] = recipe_encoder(dict(res["loaded"].card.encoder), device, weights_file)
        return res["encoder"]


def _publish(src: Path, target: Path) -> None:
    """``src`` appears as ``target`` whole or not at all (a hard link when possible, else a copy)."""
    with atomic_path(target) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def run_slide_job(huey, payload: dict[str, Any]) -> None:  # noqa: ANN001
    """Preprocess one slide with the model's recipe, predict, and publish it for the viewer."""
    from acmil.features import read_features
    from acmil.predict_slides import cached_features

    store, job_id = JobStore(huey), payload["job_id"]
    job = store.get(job_id)
    if job is None or job.get("state") in TERMINAL:
        return
    if store.cancel_asked(job_id):
        store.update(job_id, state="cancelled", finished=time.time())
        return
    t0 = time.time()
    store.update(
        job_id,
        state="reading",
        progress=STAGE_START["reading"],
        started=t0,
        finished=None,
        message="",
        worker=worker_name(),
        attempts=int(job.get("attempts", 0)) + 1,
    )
    seconds: dict[str, float] = {}
    history: list[list] = [["reading", 0.0]]
    last = {"stage": "reading", "t": time.perf_counter(), "beat": 0.0}

    def progress(stage: str, done: int, total: int) -> None:
        if store.cancel_asked(job_id):
            raise JobCancelled("cancelled")
        now = time.perf_counter()
        state = {"written": "predicting"}.get(stage, stage)
        changed = state != last["stage"]
        if changed:
            seconds[last["stage"]] = seconds.get(last["stage"], 0.0) + now - last["t"]
            last.update(stage=state, t=now)
            history.append([state, round(time.time() - t0, 3)] + ([done, total] if total else []))
        elif now - last["beat"] < 0.5:  # at most two writes a second while encoding
            return
        last["beat"] = now
        fraction = STAGE_START.get(state, 0.0)
        if state == "encoding" and total:
            fraction += (STAGE_START["predicting"] - STAGE_START["encoding"]) * done / total
        store.update(job_id, state=state, progress=fraction, tiles_done=done, tiles_total=total, history=history)

    device = DEVICE_OVERRIDE or payload.get("device", "cpu")
    try:
        res = _resources(payload["checkpoint"], device)
        loaded = res["loaded"]
        recipe = dict(loaded.card.encoder)
        path = cached_features(
            Path(payload["slide_path"]),
            payload["slide_id"],
            recipe,
            Path(payload["work_dir"]) / "cache",
            lambda: _encoder(res, device, payload.get("weights_file")),
            progress,
            digest=payload["content_hash"],
            workers=int(payload.get("readers", 0)),  # no fork inside a server
        )
        progress("predicting", 0, 0)
        feats = read_features(path)
        if feats.dim != loaded.in_dim:
            raise ValueError(f"{path.name}: {feats.dim}-d features, the model expects {loaded.in_dim}-d")
        pred = loaded.predict(feats.features)  # an ensemble's: its members' mean probabilities
        if store.cancel_asked(job_id):
            raise JobCancelled("cancelled")
        slide = Path(payload["slide_path"])
        _publish(slide, Path(payload["slides_dir"]) / f"{payload['slide_id']}{slide.suffix.lower()}")
        _publish(path, Path(payload["features_dir"]) / f"{payload['slide_id']}.h5")  # last: the registry keys on it
        seconds[last["stage"]] = seconds.get(last["stage"], 0.0) + time.perf_counter() - last["t"]
        names = loaded.card.class_names
        probabilities = {n: float(p) for n, p in zip(names, pred.probabilities, strict=True)}
        answer = {"predicted": names[pred.predicted], "probabilities": probabilities}
        if len(pred.members) > 1:
            answer["model_probabilities"] = [
                {n: float(p) for n, p in zip(names, row, strict=True)} for row in pred.member_probabilities
            ]
        history.append(["done", round(time.time() - t0, 3)])
        store.update(
            job_id,
            state="done",
            progress=1.0,
            finished=time.time(),
            seconds=seconds,
            history=history,
            prediction=answer,
        )
    except JobCancelled:
        store.update(job_id, state="cancelled", finished=time.time(), message="cancelled")
    except Exception as err:  # noqa: BLE001 - a bad slide fails its job, never the worker
        log.warning(
            "slide job %s (%s) failed: %s: %s",
            job_id,
            payload["slide_id"],
            type(err).__name__,
            err,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        message = (str(err) or type(err).__name__).replace(str(payload["slide_path"]), payload["slide_id"])
        store.update(job_id, state="failed", finished=time.time(), message=message)
