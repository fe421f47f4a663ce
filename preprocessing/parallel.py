"""Several devices on one machine: one process per device, all pulling slides from one shared queue.

A fast GPU simply takes more slides. Each process loads its own encoder on its device and reports every
slide's result back; the parent writes the manifest. Slides a crashed process took but never finished are
reported as failed.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable, Iterator
from pathlib import Path

from .extract import ExtractConfig, Extractor, SlideSource
from .manifest import SlideOutcome

_STOP = None


def _pull(jobs: mp.Queue, taken: mp.Queue, device: str) -> Iterator[SlideSource]:
    while (src := jobs.get()) is not _STOP:
        taken.put((device, src.slide_id))
        yield src


def _device_main(
    device: str, enc_kwargs: dict, cfg: ExtractConfig, out: Path, jobs: mp.Queue, results: mp.Queue
) -> None:
    from .encoders import load_encoder

    encoder = load_encoder(device=device, **enc_kwargs)
    Extractor(encoder, cfg, out, device, progress=False).run(
        _pull(jobs, results, device), lambda r: results.put(("result", r))
    )


def run_on_devices(
    devices: list[str],
    enc_kwargs: dict,
    cfg: ExtractConfig,
    out: Path,
    sources: list[SlideSource],
    on_result: Callable[[SlideOutcome], None],
    progress: bool | str = True,
) -> list[SlideOutcome]:
    """Process ``sources`` with one spawned process per device; returns one result per slide."""
    from .encoders import load_encoder
    from .progress import Progress

    load_encoder(device="cpu", **enc_kwargs)  # fail fast on a bad name or weights, before spawning
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    jobs, results = ctx.Queue(), ctx.Queue()
    for src in sources:
        jobs.put(src)
    for _ in devices:
        jobs.put(_STOP)
    procs = [
        ctx.Process(target=_device_main, args=(d, enc_kwargs, cfg, out, jobs, results), daemon=False) for d in devices
    ]
    for p in procs:
        p.start()
    done: dict[str, SlideOutcome] = {}
    taken: dict[str, str] = {}
    by_id = {s.slide_id: s for s in sources}
    bar = Progress(progress, len(sources))
    while len(done) < len(sources):
        try:
            msg = results.get(timeout=1.0)
        except queue.Empty:
            if all(not p.is_alive() for p in procs):
                break
            continue
        if msg[0] == "result":
            res = msg[1]
            done[res.slide_id] = res
            on_result(res)
            bar.slide_done(res)
        else:
            taken[msg[1]] = msg[0]
    for p in procs:
        p.join()
    bar.close()
    codes = {d: p.exitcode for d, p in zip(devices, procs, strict=True)}
    for sid, src in by_id.items():  # lost to a crashed process, or never taken because all processes died
        if sid not in done:
            dev = taken.get(sid)
            why = f"the process for {dev} exited with code {codes[dev]}" if dev else "no device process was left"
            res = SlideOutcome(
                slide_id=sid, path=str(src.path), status="failed", error=f"{src.path}: not processed: {why}"
            )
            done[sid] = res
            on_result(res)
    return [done[s.slide_id] for s in sources]
