"""Preprocessing benchmark: does tile I/O hide behind the encoder?

On one generated slide (default 40960 x 32768 px at 0.5 µm/px: ~20k grid tiles of 256 px, about half on tissue),
with resnet18 (random weights: speed does not depend on them), batch 32, tiles resized to 224:

- ``encoder_tiles_per_s``: the encoder alone on (32, 3, 224, 224) tensors already in memory (inference mode,
  channels-last, same autocast rule as the pipeline), measured before and after the pipeline, averaged;
- ``pipeline_tiles_per_s``: the whole pipeline (segmentation, tiling, reading in DataLoader workers, transform,
  encode, HDF5 write) on the slide; ``ratio`` = pipeline / encoder (target >= 0.9);
- ``segmentation_tiling_s``: open + thumbnail + tissue segmentation + tile grid;
- ``read_tiles_per_s``: pure tile reading (read + resize to the encoder input, 224) in this process, one thread.

    python benchmarks/bench_preprocessing.py [--width 40960 --height 32768] [--workers 1] [--out bench_out]

Writes ``bench_out/preprocessing.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from acmil.preprocessing.dataset import read_tile  # noqa: E402
from acmil.preprocessing.encoders import load_encoder  # noqa: E402
from acmil.preprocessing.extract import ExtractConfig, Extractor, SlideSource, _autocast, plan_slide  # noqa: E402
from acmil.preprocessing.tiling import TilingParams  # noqa: E402
from acmil.synthetic.slides import generate_slide  # noqa: E402


def encoder_alone(encoder, device: torch.device, batch: int, seconds: float = 20.0) -> float:
    """Tiles/s of the encoder on in-memory tensors (after warm-up)."""
    size = encoder.input_size or 256
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), _autocast(device, "auto"):
        for _ in range(2):
            encoder.model(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            encoder.model(x).float().cpu()
            n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=40960)
    p.add_argument("--height", type=int, default=32768)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", type=Path, default=None, help="where to put the slide (default: a temp folder)")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args()
    device = torch.device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="acmil-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    slide_path = work / f"bench_{args.width}x{args.height}.tif"
    t0 = time.perf_counter()
    if not slide_path.exists():
        generate_slide(slide_path, work / "bench_mask.png", tumour=True, seed=1, width=args.width, height=args.height)
    gen_s = time.perf_counter() - t0

    encoder = load_encoder(args.encoder, "random", device=device)
    cfg = ExtractConfig(
        tiling=TilingParams(target_mpp=0.5, tile_size=256), batch_size=args.batch_size, workers=args.workers, qc=False
    )
    src = SlideSource(path=slide_path, slide_id=slide_path.stem)

    t0 = time.perf_counter()
    plan = plan_slide(src, cfg, encoder, work / "plan_only")
    seg_s = time.perf_counter() - t0
    n_tiles = len(plan.grid)

    rng = np.random.default_rng(0)  # pure reading: a random sample of the kept tiles, this process, one thread
    sample = plan.grid.coords[rng.choice(n_tiles, min(n_tiles, 1500), replace=False)]
    t0 = time.perf_counter()
    with plan.slide as slide:
        for x, y in sample:
            read_tile(slide, int(x), int(y), plan.grid.read_level, plan.grid.read_size, plan.out_size)
    read_tps = len(sample) / (time.perf_counter() - t0)

    enc_before = encoder_alone(encoder, device, args.batch_size, float(os.environ.get("BENCH_ENC_S", 20)))
    out_dir = work / "pipeline"
    (out_dir / "features").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = Extractor(encoder, cfg, out_dir, device, progress=False).run([src])
    pipe_s = time.perf_counter() - t0
    assert results[0].status == "ok", results[0].error
    enc_after = encoder_alone(encoder, device, args.batch_size, float(os.environ.get("BENCH_ENC_S", 20)))
    enc_tps = (enc_before + enc_after) / 2
    pipe_tps = results[0].n_tiles / pipe_s

    record = {
        "slide": {
            "width": args.width,
            "height": args.height,
            "mpp": 0.5,
            "tiles_256px_at_0.5mpp": n_tiles,
            "generation_s": round(gen_s, 1),
        },
        "encoder": args.encoder,
        "batch_size": args.batch_size,
        "input_size": encoder.input_size,
        "device": str(device),
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "encoder_tiles_per_s": round(enc_tps, 2),
        "encoder_tiles_per_s_before_after": [round(enc_before, 2), round(enc_after, 2)],
        "pipeline_tiles_per_s": round(pipe_tps, 2),
        "pipeline_seconds": round(pipe_s, 1),
        "ratio_pipeline_over_encoder": round(pipe_tps / enc_tps, 3),
        "segmentation_tiling_s": round(seg_s, 2),
        "read_tiles_per_s": round(read_tps, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "preprocessing.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
