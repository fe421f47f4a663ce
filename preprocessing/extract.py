"""The batch driver that encodes a stream of slides (planning one slide is in :mod:`.plan`).

Flow: a planner thread turns slide sources into :class:`SlidePlan` s (or into results: skipped / failed); the
main thread hands their tiles to a DataLoader as :class:`~.dataset.ReadJob` s, encodes each batch as it comes
and appends it to the slide's :class:`acmil.features.FeatureWriter`, which renames the file into place when
the slide's last batch is written. Failures are isolated per slide and become manifest rows.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from acmil.features import DiskFullError, FeatureWriter

from .dataset import ReadJob, make_loader
from .encoders import Encoder
from .lease import SlideLeases, remove_stale_partials
from .manifest import SlideOutcome
from .plan import ExtractConfig, SlidePlan, _tool_version, fail, plan_slide
from .progress import Progress
from .slide import SlideSource

__all__ = ["ExtractConfig", "Extractor", "SlidePlan", "SlideSource", "encode_batch", "plan_slide"]  # plan re-exported


def _autocast(device: torch.device, precision: str):
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return nullcontext()
    if precision == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def encode_batch(encoder: Encoder, tiles: torch.Tensor, device: torch.device, precision: str = "auto") -> np.ndarray:
    """uint8 (B, T, T, 3) tiles -> (B, D) float32 features."""
    with torch.inference_mode(), _autocast(device, precision):
        x = encoder.preprocess(tiles.to(device, non_blocking=True))  # (B, 3, S, S) channels-last
        feats = encoder.model(x)  # (B, D)
    return feats.float().cpu().numpy()


class Extractor:
    """Encodes a stream of slides with one encoder on one device.

    Each slide is worked on under its lease (see :mod:`.lease`): slides another run on the same output folder
    holds are deferred, then waited for after this run's own work. A full output disk stops the run: the slide
    being written fails with "disk full while writing <file>", the slides in flight and those not yet started
    fail as "not attempted", and :attr:`disk_full` holds the error.
    """

    def __init__(
        self,
        encoder: Encoder,
        cfg: ExtractConfig,
        out: Path,
        device: torch.device | str = "cpu",
        progress: bool | str = True,
    ) -> None:
        self.encoder, self.cfg, self.out = encoder, cfg, Path(out)
        self.device = torch.device(device)
        self.progress = progress
        self.leases = SlideLeases(self.out)
        self.active: dict[str, SlidePlan] = {}
        self.disk_full: DiskFullError | None = None
        self._stop = threading.Event()
        self._pending: list[SlideOutcome] = []
        self._queue: queue.Queue | None = None

    def _attrs(self, plan: SlidePlan) -> dict:
        return {
            "slide_id": plan.source.slide_id,
            "mpp_level0": float(plan.slide.mpp),
            "mpp_target": self.cfg.tiling.target_mpp,
            "mpp_source": plan.slide.mpp_source,
            "read_level": plan.grid.read_level,
            "encoder": self.encoder.name,
            "encoder_weights": self.encoder.weights_record(),
            "transform": self.encoder.transform_record(),
            "encoder_recipe": self.encoder.recipe_record(),
            "tissue_params": self.cfg.tissue.as_dict(),
            "tiling_params": self.cfg.tiling.as_dict(),
            "tissue_mm2": plan.tissue_mm2,
            "params_hash": plan.params_hash,
            "tool_version": _tool_version(),
            "source_file": plan.source.path.name,
            **plan.extra,  # e.g. "annotations": the --roi-classes / --exclude-classes record
        }

    def _stop_for(self, err: DiskFullError) -> None:
        if self.disk_full is None:
            self.disk_full = err
        self._stop.set()

    def _not_attempted(self, source: SlideSource) -> SlideOutcome:
        return fail(source, f"{source.path}: not attempted: {self.disk_full}", time.perf_counter())

    def _plan(self, source: SlideSource, wait: bool) -> SlidePlan | SlideOutcome | None:
        """Plan one slide under its lease; None when another run holds the lease and ``wait`` is False."""
        lease = self.leases.acquire(source.slide_id, wait)
        if lease is None:
            return None
        try:
            remove_stale_partials(self.out, source.slide_id)  # safe: we hold the lease, their writer is dead
            item = plan_slide(source, self.cfg, self.encoder, self.out)
        except BaseException:
            lease.release()
            raise
        if isinstance(item, SlidePlan):
            item.lease = lease
        else:
            lease.release()
        return item

    def _plans(self, sources: Iterable[SlideSource], wait: bool, deferred: list[SlideSource]) -> queue.Queue:
        """Start the planner thread. Called from the job stream's first ``next()``, i.e. after the DataLoader
        forked its workers: forking while this thread is inside OpenSlide could deadlock a worker."""
        q: queue.Queue = queue.Queue(maxsize=2)  # plan at most two slides ahead

        def work() -> None:
            try:
                for src in sources:
                    if self._stop.is_set():  # the disk is full: report the rest without trying them
                        q.put(self._not_attempted(src))
                        continue
                    try:
                        item = self._plan(src, wait)
                    except DiskFullError as err:
                        self._stop_for(err)
                        item = fail(src, err, time.perf_counter())
                    if item is None:
                        deferred.append(src)
                    else:
                        q.put(item)
            finally:
                q.put(None)

        threading.Thread(target=work, name="acmil-planner", daemon=True).start()
        return q

    def _jobs(
        self, sources: Iterable[SlideSource], wait: bool, deferred: list, progress: Progress
    ) -> Iterator[ReadJob]:
        self._queue = self._plans(sources, wait, deferred)
        while (item := self._queue.get()) is not None:
            if isinstance(item, SlideOutcome):
                self._pending.append(item)
            elif self._stop.is_set():
                item.release()
                self._pending.append(self._not_attempted(item.source))
            else:
                self.active[item.source.slide_id] = item
                progress.add_tiles(len(item.grid))
                yield from item.jobs()
        self._queue = None  # the planner is done: nothing left to drain

    def _drain(self) -> None:
        """After a stop: collect what the planner still hands over (it reports the rest as not attempted)."""
        while (item := self._queue.get()) is not None:
            if isinstance(item, SlidePlan):
                item.release()
                item = self._not_attempted(item.source)
            self._pending.append(item)

    def _finish(self, plan: SlidePlan) -> None:
        del self.active[plan.source.slide_id]
        try:
            if plan.failed:
                if plan.writer is not None:
                    plan.writer.abort()
                self._pending.append(plan.result("failed", plan.failed))
                return
            try:
                plan.writer.close()
                self._pending.append(plan.result("ok"))
            except Exception as err:  # noqa: BLE001 - the writer already removed its temporary file
                if isinstance(err, DiskFullError):
                    self._stop_for(err)
                    self._pending.append(plan.result("failed", f"{plan.source.path}: {err}"))
                else:
                    self._pending.append(plan.result("failed", f"{plan.source.path}: cannot write features ({err})"))
        finally:
            plan.release()

    def _batch(self, plan: SlidePlan, index: int, tiles: torch.Tensor, error: str) -> None:
        if plan.first_batch is None:
            plan.first_batch = time.perf_counter()
        if error and not plan.failed:
            plan.failed = error
        if not plan.failed:
            try:
                feats = encode_batch(self.encoder, tiles, self.device, self.cfg.precision)
                if plan.writer is None:
                    final = self.out / "features" / f"{plan.source.slide_id}.h5"
                    coord_attrs = plan.grid.coord_attrs(plan.source.slide_id, *plan.dims)
                    plan.writer = FeatureWriter(final, feats.shape[1], self._attrs(plan), coord_attrs, self.cfg.dtype)
                start = index * plan.batch_size
                plan.writer.append(feats.astype(self.cfg.dtype), plan.grid.coords[start : start + len(feats)])
            except DiskFullError as err:  # the writer already removed its temporary file
                plan.writer = None
                plan.failed = f"{plan.source.path}: {err}"
                self._stop_for(err)
            except Exception as err:  # noqa: BLE001
                plan.failed = f"{plan.source.path}: encoding/writing failed ({type(err).__name__}: {err})"
        plan.done += 1
        if plan.done == plan.n_batches:
            self._finish(plan)

    def _pass(self, sources: Iterable[SlideSource], wait: bool, deferred: list, progress: Progress, flush) -> None:
        """One pass of the DataLoader over ``sources``; slides leased elsewhere go to ``deferred``."""
        self._queue = None
        loader = make_loader(
            self._jobs(sources, wait, deferred, progress), self.cfg.workers, pin_memory=self.device.type == "cuda"
        )
        try:
            for slide_id, index, tiles, error in loader:
                self._batch(self.active[slide_id], index, tiles, error)
                progress.tiles_done(len(tiles))
                flush()
                if self._stop.is_set():
                    break
        except BaseException:
            self._stop.set()  # interrupted: the planner stops planning
            raise
        finally:
            for plan in list(self.active.values()):  # leave no half-written file, hold no lease
                if plan.writer is not None:
                    plan.writer.abort()
                plan.release()
                if self.disk_full is not None:
                    why = plan.failed or f"{plan.source.path}: not finished: {self.disk_full}"
                    self._pending.append(plan.result("failed", why))
            self.active.clear()
        if self._stop.is_set() and self._queue is not None:
            self._drain()
        flush()

    def run(
        self,
        sources: Iterable[SlideSource],
        on_result: Callable[[SlideOutcome], None] | None = None,
        n_slides: int | None = None,
    ) -> list[SlideOutcome]:
        """Process every source; returns one result per slide (also passed to ``on_result`` as they come)."""
        results: list[SlideOutcome] = []
        progress = Progress(self.progress, n_slides)

        def flush() -> None:
            while self._pending:
                res = self._pending.pop(0)
                results.append(res)
                progress.slide_done(res)
                if on_result is not None:
                    on_result(res)

        deferred: list[SlideSource] = []
        try:
            self._pass(sources, False, deferred, progress, flush)
            if deferred and not self._stop.is_set():
                progress.note(f"{len(deferred)} slide(s) being processed by another run: waiting for them")
                self._pass(deferred, True, [], progress, flush)
        finally:
            progress.close()
        return results
