"""The per-slide work (plan: open, segment, tile, QC) and the batch driver that encodes a stream of slides.

Flow: a planner thread turns slide sources into :class:`SlidePlan` s (or into results: skipped / failed); the
main thread hands their tiles to a DataLoader as :class:`~.dataset.ReadJob` s, encodes each batch as it comes
and appends it to the slide's :class:`acmil.features.FeatureWriter`, which renames the file into place when
the slide's last batch is written. Failures are isolated per slide and become manifest rows.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from acmil.features import FeatureWriter, read_meta

from .annotations import RegionFilter, apply_regions, region_digest
from .dataset import ReadJob, make_loader
from .encoders import Encoder
from .manifest import SlideResult
from .qc import draw_qc, save_png, save_qc_geojson
from .slide import Slide, open_slide
from .tiling import TileGrid, TilingParams, plan_tiles
from .tissue import TissueParams, segment_tissue


@dataclass(frozen=True)
class SlideSource:
    """A slide to process: its file, id, and an optional per-slide MPP override."""

    path: Path
    slide_id: str
    mpp: float | None = None


@dataclass(frozen=True)
class ExtractConfig:
    """Everything but the encoder that decides what a feature file contains, plus how to run."""

    tissue: TissueParams = TissueParams()
    tiling: TilingParams = TilingParams()
    batch_size: int = 32
    workers: int = 1
    precision: str = "auto"  # auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, bf16, fp16
    dtype: str = "float32"  # stored feature dtype
    mpp_fallback: float | None = None  # --mpp: used for slides without MPP metadata
    overwrite: bool = False
    qc: bool = True
    thumb_max: int = 4096  # cap on the segmentation thumbnail's longer side
    regions: RegionFilter | None = None  # --annotations with --roi-classes / --exclude-classes


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("acmil")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def params_hash(cfg: ExtractConfig, encoder: Encoder, mpp0: float, slide_bytes: int) -> str:
    """Digest of every setting that changes a slide's features (resume compares it with the file's)."""
    spec = {
        "tissue": cfg.tissue.as_dict(),
        "tiling": cfg.tiling.as_dict(),
        "encoder": encoder.name,
        "weights": encoder.weights_record(),
        "transform": encoder.transform_record(),
        "dtype": cfg.dtype,
        "mpp0": round(float(mpp0), 6),
        "slide_bytes": int(slide_bytes),
        "format_version": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SlidePlan:
    """A slide ready to encode."""

    source: SlideSource
    slide: Slide
    grid: TileGrid
    dims: tuple[int, int]
    tissue_mm2: float
    params_hash: str
    t0: float  # perf_counter when planning started
    batch_size: int
    out_size: int  # side of the tiles handed to the encoder (its input size, or the tile size)
    plan_seconds: float = 0.0
    first_batch: float | None = None  # perf_counter when its first batch arrived
    done: int = 0
    failed: str = ""
    writer: FeatureWriter | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_batches(self) -> int:
        return -(-len(self.grid) // self.batch_size)

    def jobs(self) -> Iterator[ReadJob]:
        g = self.grid
        for b in range(self.n_batches):
            chunk = g.coords[b * self.batch_size : (b + 1) * self.batch_size]
            yield ReadJob(self.slide, b, chunk, g.read_level, g.read_size, self.out_size)

    def result(self, status: str, error: str = "") -> SlideResult:
        # planning time + encoding time (not the time spent queued behind the previous slide)
        busy = time.perf_counter() - (self.first_batch or time.perf_counter())
        return SlideResult(
            self.source.slide_id,
            str(self.source.path),
            status,
            len(self.grid) if status == "ok" else 0,
            self.tissue_mm2,
            self.slide.mpp,
            self.grid.read_level,
            self.plan_seconds + busy,
            error,
            self.params_hash,
        )


def _fail(source: SlideSource, err: BaseException | str, t0: float, **kw) -> SlideResult:
    return SlideResult(
        source.slide_id, str(source.path), "failed", seconds=time.perf_counter() - t0, error=str(err), **kw
    )


def plan_slide(source: SlideSource, cfg: ExtractConfig, encoder: Encoder, out: Path) -> SlidePlan | SlideResult:
    """Open, check resume, segment and tile one slide; a result instead of a plan when there is nothing to encode."""
    t0 = time.perf_counter()
    try:
        slide = open_slide(source.path, mpp=source.mpp, mpp_fallback=cfg.mpp_fallback)
        digest = params_hash(cfg, encoder, slide.mpp, source.path.stat().st_size)
        digest = region_digest(digest, cfg.regions, source.slide_id)  # unchanged without --annotations
        final = out / "features" / f"{source.slide_id}.h5"
        leftovers = [
            *final.parent.glob(f".{source.slide_id}.h5.*.partial"),  # left by a killed run
            *(out / "qc").glob(f".{source.slide_id}.png.*.partial.png"),
            *(out / "qc").glob(f".{source.slide_id}.geojson.*.partial"),
        ]
        for stale in leftovers:
            stale.unlink(missing_ok=True)
        if final.exists() and not cfg.overwrite:
            try:
                meta = read_meta(final)
                if meta.attrs.get("params_hash") == digest:
                    return SlideResult(
                        source.slide_id,
                        str(source.path),
                        "skipped",
                        meta.n_patches,
                        float(meta.attrs.get("tissue_mm2", 0.0)),
                        slide.mpp,
                        meta.attrs.get("read_level"),
                        time.perf_counter() - t0,
                        "",
                        digest,
                    )
            except ValueError:
                pass  # unreadable old file: recompute
        dims = slide.dimensions
        side0 = cfg.tiling.tile_size * cfg.tiling.target_mpp / slide.mpp
        if min(dims) < side0:
            raise ValueError(
                f"{source.path}: slide ({dims[0]}x{dims[1]} px) is smaller than one tile "
                f"({cfg.tiling.tile_size} px at {cfg.tiling.target_mpp} µm/px = {side0:.0f} level-0 px)"
            )
        seg_scale = min(cfg.tissue.seg_mpp / slide.mpp, max(dims) / 64)  # level-0 px per thumbnail px
        tw, th = max(1, round(dims[0] / seg_scale)), max(1, round(dims[1] / seg_scale))
        f = min(1.0, cfg.thumb_max / max(tw, th))
        thumb = slide.thumbnail(max(1, int(tw * f)), max(1, int(th * f)))
        slide.close()  # the readers reopen it; an open handle per planned slide would leak descriptors
        thumb_mpp = slide.mpp * dims[0] / thumb.shape[1]
        mask, _ = segment_tissue(thumb, thumb_mpp, cfg.tissue)
        tissue_mm2 = float(mask.sum()) * thumb_mpp**2 / 1e6
        grid = plan_tiles(dims, slide.level_downsamples, slide.mpp, cfg.tiling, mask)
        grid, regions_record = apply_regions(grid, cfg.regions, source.slide_id, dims)
        if cfg.qc:
            save_png(
                out / "qc" / f"{source.slide_id}.png", draw_qc(thumb, mask, grid.coords, grid.patch_size_level0, dims)
            )
            save_qc_geojson(out / "qc" / f"{source.slide_id}.geojson", mask, grid, dims, source.slide_id, slide.mpp)
        kw = dict(tissue_mm2=tissue_mm2, mpp=slide.mpp, read_level=grid.read_level, params_hash=digest)
        if not mask.any():
            return _fail(source, f"{source.path}: no tissue detected (saturation segmentation found nothing)", t0, **kw)
        if len(grid) == 0:
            return _fail(
                source,
                f"{source.path}: no tile has >= {cfg.tiling.min_tissue:.0%} tissue "
                f"({tissue_mm2:.3f} mm² of tissue found)",
                t0,
                **kw,
            )
        out_size = encoder.input_size or cfg.tiling.tile_size
        return SlidePlan(
            source, slide, grid, dims, tissue_mm2, digest, t0, cfg.batch_size, out_size, time.perf_counter() - t0,
            extra={"annotations": regions_record} if regions_record else {},
        )
    except Exception as err:  # noqa: BLE001 - one bad slide becomes a failed row, never a crash
        return _fail(source, err, t0)


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
    """Encodes a stream of slides with one encoder on one device."""

    def __init__(
        self, encoder: Encoder, cfg: ExtractConfig, out: Path, device: torch.device | str = "cpu", progress: bool = True
    ) -> None:
        self.encoder, self.cfg, self.out = encoder, cfg, Path(out)
        self.device = torch.device(device)
        self.progress = progress
        self.active: dict[str, SlidePlan] = {}
        self._pending: list[SlideResult] = []

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

    def _plans(self, sources: Iterable[SlideSource]) -> queue.Queue:
        """Start the planner thread. Called from the job stream's first ``next()``, i.e. after the DataLoader
        forked its workers: forking while this thread is inside OpenSlide could deadlock a worker."""
        q: queue.Queue = queue.Queue(maxsize=2)  # plan at most two slides ahead

        def work() -> None:
            try:
                for src in sources:
                    q.put(plan_slide(src, self.cfg, self.encoder, self.out))
            finally:
                q.put(None)

        threading.Thread(target=work, name="acmil-planner", daemon=True).start()
        return q

    def _jobs(self, sources: Iterable[SlideSource], tiles_bar) -> Iterator[ReadJob]:
        plans = self._plans(sources)
        while (item := plans.get()) is not None:
            if isinstance(item, SlideResult):
                self._pending.append(item)
                continue
            self.active[item.source.slide_id] = item
            if tiles_bar is not None:
                tiles_bar.total = (tiles_bar.total or 0) + len(item.grid)
                tiles_bar.refresh()
            yield from item.jobs()

    def _finish(self, plan: SlidePlan) -> None:
        del self.active[plan.source.slide_id]
        if plan.failed:
            if plan.writer is not None:
                plan.writer.abort()
            self._pending.append(plan.result("failed", plan.failed))
            return
        try:
            plan.writer.close()
            self._pending.append(plan.result("ok"))
        except Exception as err:  # noqa: BLE001
            plan.writer.abort()
            self._pending.append(plan.result("failed", f"{plan.source.path}: cannot write features ({err})"))

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
            except Exception as err:  # noqa: BLE001
                plan.failed = f"{plan.source.path}: encoding/writing failed ({type(err).__name__}: {err})"
        plan.done += 1
        if plan.done == plan.n_batches:
            self._finish(plan)

    def run(
        self,
        sources: Iterable[SlideSource],
        on_result: Callable[[SlideResult], None] | None = None,
        n_slides: int | None = None,
    ) -> list[SlideResult]:
        """Process every source; returns one result per slide (also passed to ``on_result`` as they come)."""
        from tqdm.auto import tqdm

        results: list[SlideResult] = []
        slides_bar = tqdm(total=n_slides, desc="slides", unit="slide", disable=not self.progress, position=0)
        tiles_bar = tqdm(total=0, desc="tiles", unit="tile", disable=not self.progress, position=1, leave=False)

        def flush() -> None:
            while self._pending:
                res = self._pending.pop(0)
                results.append(res)
                slides_bar.update(1)
                slides_bar.set_postfix_str(f"{res.slide_id}: {res.status}")
                if on_result is not None:
                    on_result(res)

        loader = make_loader(
            self._jobs(sources, tiles_bar if self.progress else None),
            self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )
        try:
            for slide_id, index, tiles, error in loader:
                self._batch(self.active[slide_id], index, tiles, error)
                tiles_bar.update(len(tiles))
                flush()
        finally:
            for plan in list(self.active.values()):  # interrupted: leave no half-written file
                if plan.writer is not None:
                    plan.writer.abort()
        flush()
        tiles_bar.close()
        slides_bar.close()
        return results
