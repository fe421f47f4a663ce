"""Encoder recipes benchmark: tiles/s of each recipe's transform + model on in-memory uint8 tiles.

Random weights (speed does not depend on them), inference mode, channels-last, batch 8 of 256 px uint8 tiles as
the readers deliver them; the timed step is ``encoder.preprocess`` (the recipe's resize / crop / normalise) and
the forward pass, the same as the pipeline's ``encode_batch``. Short runs (``--seconds`` per recipe).

    python benchmarks/bench_encoders.py                      # CPU: the small recipes (ViT-S/B, CNNs)
    python benchmarks/bench_encoders.py --device cuda --all  # GPU: every timm recipe, bf16 autocast

Writes ``--out`` (default benchmarks/results/encoders_<device>.json) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from acmil.atomic import write_json  # noqa: E402
from acmil.preprocessing.encoders import RECIPES, load_encoder  # noqa: E402
from acmil.preprocessing.extract import _autocast  # noqa: E402

# the patch-8 ViTs (kaiko_vits8, lunit_vits8: 784 tokens) take ~4x a patch-16 ViT-S: --recipes adds them
SMALL = ["resnet50_trunc", "efficientnet_lite0", "kaiko_vits16", "kaiko_vitb16", "lunit_vits16", "h0_mini"]
BASELINE = "resnet18"  # plain timm name, the preprocessing benchmark's encoder: ratios are against it, same run


def tiles_per_s(encoder, device: torch.device, batch: int, seconds: float, precision: str) -> tuple[float, float]:
    """(transform + model, model alone) tiles/s after a warm-up batch."""
    tiles = torch.randint(0, 256, (batch, 256, 256, 3), dtype=torch.uint8, device=device)
    with torch.inference_mode(), _autocast(device, precision):
        x = encoder.preprocess(tiles)
        encoder.model(x)  # warm-up
        rates = []
        for with_transform in (True, False):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                encoder.model(encoder.preprocess(tiles) if with_transform else x).float().cpu()
                n += batch
            rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--all", action="store_true", help="every timm recipe (GPU sizes: ViT-g included)")
    p.add_argument("--recipes", nargs="*", help="these recipes instead")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--precision", default="auto", help="auto = bf16/fp16 autocast on GPU, fp32 on CPU")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    device = torch.device(args.device)
    names = [BASELINE] + (
        args.recipes or ([n for n, r in RECIPES.items() if r.backend == "timm"] if args.all else SMALL)
    )
    rows = []
    for name in names:
        t0 = time.perf_counter()
        enc = load_encoder(name, "random", device=device)
        build_s = time.perf_counter() - t0
        full, model_only = tiles_per_s(enc, device, args.batch_size, args.seconds, args.precision)
        r, t = RECIPES.get(name), enc.transform
        rows.append(
            {
                "recipe": name,
                "constructor": f"{r.backend}:{r.arch}" if r else f"timm:{name}",
                "dim": enc.dim,
                "input": f"{t.resize}->{t.crop} {t.interpolation}" if t else f"{enc.input_size} (reader resize)",
                "tiles_per_s": round(full, 1),
                "model_only_tiles_per_s": round(model_only, 1),
                "transform_share": round(1 - full / model_only, 3),
                "build_s": round(build_s, 1),
            }
        )
        rows[-1]["vs_baseline"] = round(full / rows[0]["tiles_per_s"], 3)
        print(json.dumps(rows[-1]), flush=True)
        del enc
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result = {
        "device": str(device),
        "gpu": gpu,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "seconds_per_measure": args.seconds,
        "precision": args.precision,
        "weights": "random",
        "torch": torch.__version__,
        "load_average_1_5_15": list(os.getloadavg()),
        "rows": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"encoders_{device.type}.json"
    write_json(out, result)
    print(f"\n| recipe | dim | input | tiles/s ({gpu or 'CPU'}) | model alone |\n| --- | ---: | --- | ---: | ---: |")
    for row in rows:
        print(
            f"| `{row['recipe']}` | {row['dim']} | {row['input']} | {row['tiles_per_s']} | "
            f"{row['model_only_tiles_per_s']} |"
        )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
