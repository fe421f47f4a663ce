"""Planning one slide: open it, check resume, segment tissue on a thumbnail, lay out the tile grid, draw its QC.

:func:`plan_slide` turns a :class:`SlideSource` into a :class:`SlidePlan` (tiles to encode) or directly into a
:class:`~.manifest.SlideOutcome` (skipped: complete output with the same parameters; failed: the reason). A full
output disk is not a property of one slide: :class:`acmil.features.DiskFullError` is raised, not returned.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from acmil.features import DiskFullError, FeatureWriter, read_meta

from .annotations import RegionFilter, apply_regions, region_digest
from .dataset import ReadJob
from .encoders import Encoder
from .manifest import SlideOutcome
from .qc import QC_LONG_SIDE, QCLabel, draw_qc, qc_figure, save_png, save_qc_geojson
from .slide import Slide, SlideSource, open_slide
from .tiling import TileGrid, TilingParams, plan_tiles
from .tissue import TissueParams, segment_tissue


@dataclass(frozen=True, kw_only=True)
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
    from acmil import __version__

    return __version__


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
    lease: object | None = None  # the slide's lease (a held filelock), released when the slide is finished
    extra: dict = field(default_factory=dict)

    @property
    def n_batches(self) -> int:
        return -(-len(self.grid) // self.batch_size)

    def jobs(self) -> Iterator[ReadJob]:
        g = self.grid
        for b in range(self.n_batches):
            chunk = g.coords[b * self.batch_size : (b + 1) * self.batch_size]
            yield ReadJob(self.slide, b, chunk, g.read_level, g.read_size, self.out_size)

    def result(self, status: str, error: str = "") -> SlideOutcome:
        # planning time + encoding time (not the time spent queued behind the previous slide)
        busy = time.perf_counter() - (self.first_batch or time.perf_counter())
        return SlideOutcome(
            slide_id=self.source.slide_id,
            path=str(self.source.path),
            status=status,
            n_tiles=len(self.grid) if status == "ok" else 0,
            tissue_mm2=self.tissue_mm2,
            mpp=self.slide.mpp,
            read_level=self.grid.read_level,
            seconds=self.plan_seconds + busy,
            error=error,
            params_hash=self.params_hash,
        )

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


def fail(source: SlideSource, err: BaseException | str, t0: float, **kw) -> SlideOutcome:
    return SlideOutcome(
        slide_id=source.slide_id,
        path=str(source.path),
        status="failed",
        seconds=time.perf_counter() - t0,
        error=str(err),
        **kw,
    )


def _resume(source: SlideSource, slide: Slide, final: Path, digest: str, t0: float) -> SlideOutcome | None:
    """A "skipped" result when ``final`` is complete with the same parameters, else None."""
    try:
        meta = read_meta(final)
    except ValueError:
        return None  # unreadable old file: recompute
    if meta.attrs.get("params_hash") != digest:
        return None
    return SlideOutcome(
        slide_id=source.slide_id,
        path=str(source.path),
        status="skipped",
        n_tiles=meta.n_patches,
        tissue_mm2=float(meta.attrs.get("tissue_mm2", 0.0)),
        mpp=slide.mpp,
        read_level=meta.attrs.get("read_level"),
        seconds=time.perf_counter() - t0,
        params_hash=digest,
    )


def plan_slide(source: SlideSource, cfg: ExtractConfig, encoder: Encoder, out: Path) -> SlidePlan | SlideOutcome:
    """Open, check resume, segment and tile one slide; a result instead of a plan when there is nothing to encode.

    Raises:
        DiskFullError: the output disk is full (writing the QC picture).
    """
    t0 = time.perf_counter()
    try:
        slide = open_slide(source.path, mpp=source.mpp, mpp_fallback=cfg.mpp_fallback)
        slide.slide_id = source.slide_id  # readers key batches by it: a CSV or an upload may name a slide freely
        digest = params_hash(cfg, encoder, slide.mpp, source.path.stat().st_size)
        digest = region_digest(digest, cfg.regions, source.slide_id)  # unchanged without --annotations
        final = out / "features" / f"{source.slide_id}.h5"
        if final.exists() and not cfg.overwrite:
            skipped = _resume(source, slide, final, digest, t0)
            if skipped is not None:
                return skipped
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
        # a small thumbnail would make a small QC picture: read a finer one for it (cheap: the slide is small)
        qc_base = (
            thumb if not cfg.qc or max(thumb.shape[:2]) >= QC_LONG_SIDE else slide.thumbnail(QC_LONG_SIDE, QC_LONG_SIDE)
        )
        slide.close()  # the readers reopen it; an open handle per planned slide would leak descriptors
        thumb_mpp = slide.mpp * dims[0] / thumb.shape[1]
        mask, _ = segment_tissue(thumb, thumb_mpp, cfg.tissue)
        tissue_mm2 = float(mask.sum()) * thumb_mpp**2 / 1e6
        grid = plan_tiles(dims, slide.level_downsamples, slide.mpp, cfg.tiling, mask)
        grid, regions_record = apply_regions(grid, cfg.regions, source.slide_id, dims)
        if cfg.qc:
            label = QCLabel(
                slide_id=source.slide_id,
                mpp=slide.mpp,
                mpp_source=slide.mpp_source,
                n_tiles=len(grid),
                tile_size=cfg.tiling.tile_size,
                target_mpp=cfg.tiling.target_mpp,
                tissue_mm2=tissue_mm2,
            )
            overlay = draw_qc(qc_base, mask, grid.coords, grid.patch_size_level0, dims)
            save_png(out / "qc" / f"{source.slide_id}.png", qc_figure(overlay, label))
            save_qc_geojson(out / "qc" / f"{source.slide_id}.geojson", mask, grid, dims, source.slide_id, slide.mpp)
        kw = dict(tissue_mm2=tissue_mm2, mpp=slide.mpp, read_level=grid.read_level, params_hash=digest)
        if not mask.any():
            return fail(source, f"{source.path}: no tissue detected (saturation segmentation found nothing)", t0, **kw)
        if len(grid) == 0:
            return fail(
                source,
                f"{source.path}: no tile has >= {cfg.tiling.min_tissue:.0%} tissue "
                f"({tissue_mm2:.3f} mm² of tissue found)",
                t0,
                **kw,
            )
        out_size = encoder.input_size or cfg.tiling.tile_size
        return SlidePlan(
            source=source,
            slide=slide,
            grid=grid,
            dims=dims,
            tissue_mm2=tissue_mm2,
            params_hash=digest,
            t0=t0,
            batch_size=cfg.batch_size,
            out_size=out_size,
            plan_seconds=time.perf_counter() - t0,
            extra={"annotations": regions_record} if regions_record else {},
        )
    except DiskFullError:
        raise
    except Exception as err:  # noqa: BLE001 - one bad slide becomes a failed row, never a crash
        return fail(source, err, t0)


__all__ = ["ExtractConfig", "SlidePlan", "TilingParams", "fail", "params_hash", "plan_slide"]
