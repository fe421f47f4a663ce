"""Service latency on this CPU: prediction (uncached / cached), heatmap PNG, DeepZoom tiles.

Run:  python benchmarks/bench_service.py [--tiles 100000] [--dim 512] [--repeats 15]

Requests go through the real app (FastAPI TestClient, lifespan and routers included). Each figure is
printed with the baseline measured in the same run:
- prediction: the bare model forward (``predict_bag`` on features already in memory);
- heatmap: a per-tile loop drawing rectangles with PIL (how heatmaps are usually drawn);
- tiles: ``DeepZoomGenerator.get_tile`` called directly.
Targets (issue 4): prediction p50 < 300 ms uncached, heatmap < 1 s for 50,000 tiles, tile p95 < 150 ms.
The JSON goes to bench_out/bench_service.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from acmil.checkpoint import ModelCard, save_model
from acmil.features import write_features
from acmil.inference import predict_bag
from acmil.models import ACMIL

REPO = Path(__file__).resolve().parents[1]
SHARED_SLIDE = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
API = "/api/v1"


def stats(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "min_ms": float(ms.min()),
        "n": int(ms.size),
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def grid(n: int, patch: int) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    return np.stack([idx % cols, idx // cols], axis=1).astype(np.int64) * patch


def naive_heatmap(coords: np.ndarray, scores: np.ndarray, patch: int, size: tuple[int, int], max_size: int) -> None:
    """The per-tile loop the vectorised renderer replaces (one PIL rectangle per tile)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    scale = max_size / max(size)
    image = Image.new("RGB", (round(size[0] * scale), round(size[1] * scale)), "white")
    draw = ImageDraw.Draw(image)
    cmap = colormaps["jet"]
    ranks = scores.argsort().argsort() / max(len(scores) - 1, 1)
    for (x, y), r in zip(coords, ranks, strict=True):
        colour = tuple(int(255 * c) for c in cmap(r)[:3])
        draw.rectangle([x * scale, y * scale, (x + patch) * scale, (y + patch) * scale], fill=colour)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100_000, help="tiles in the prediction benchmark file")
    parser.add_argument("--heatmap-tiles", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512, help="feature width D (ResNet-18 / ACMIL's default: 512)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--parts", default="prediction,heatmap,tiles", help="comma-separated parts to run")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "bench_service.json")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))

    from fastapi.testclient import TestClient

    from acmil.service.config import Settings
    from acmil.service.main import create_app

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    patch = 256
    result: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "config": vars(args) | {"out": str(args.out)},
    }
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        features, slides = root / "features", root / "slides"
        features.mkdir()
        slides.mkdir()
        model = ACMIL(args.dim, 2).eval()
        card = ModelCard("acmil", {}, args.dim, ["normal", "tumour"])
        save_model(root / "model.ckpt", model, card)
        big = rng.standard_normal((args.tiles, args.dim), dtype=np.float32)
        write_features(features / "big.h5", big, grid(args.tiles, patch), coord_attrs={"patch_size_level0": patch})
        hm_coords = grid(args.heatmap_tiles, patch)
        write_features(
            features / "heat.h5",
            rng.standard_normal((args.heatmap_tiles, args.dim), dtype=np.float32),
            hm_coords,
            coord_attrs={"patch_size_level0": patch},
        )
        if SHARED_SLIDE.is_file():
            os.symlink(SHARED_SLIDE, slides / "CMU-1-Small-Region.svs")
            xs, ys = np.meshgrid(np.arange(0, 2220 - 224, 224), np.arange(0, 2967 - 224, 224))
            tissue = np.stack([xs.ravel(), ys.ravel()], axis=1)  # the whole 224-px grid (random features)
            write_features(
                features / "CMU-1-Small-Region.h5",
                rng.standard_normal((len(tissue), args.dim), dtype=np.float32),
                tissue,
                coord_attrs={"patch_size_level0": 224},
            )
        settings = Settings(checkpoint=root / "model.ckpt", features_dir=features, slides_dir=slides)

        if "prediction" in parts:  # baseline: the bare forward on in-memory features
            predict_bag(model, big)
            forward = [timed(lambda: predict_bag(model, big)) for _ in range(max(5, args.repeats // 2))]
            result["baseline_forward"] = stats(forward)

        with TestClient(create_app(settings)) as client:
            if "prediction" in parts:
                result.update(bench_prediction(client, features / "big.h5", args.repeats))
            if "heatmap" in parts:
                result.update(bench_heatmap(client, hm_coords, patch, rng, args.repeats))
            if "tiles" in parts:
                if SHARED_SLIDE.is_file():
                    result.update(bench_tiles(client, args.repeats))
                else:
                    result["tiles"] = f"skipped: {SHARED_SLIDE} not found"

    result["machine"]["load_average_at_end"] = os.getloadavg()
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def bench_prediction(client, path: Path, repeats: int) -> dict:
    url = f"{API}/slides/{path.stem}/prediction"
    assert client.get(url).status_code == 200  # warm-up (imports, allocator)
    uncached = []
    for i in range(repeats):
        stamp = time.time_ns() + (i + 1) * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))  # a new fingerprint: a cache miss
        uncached.append(timed(lambda: client.get(url)))
        assert client.get(url).json()["cached"]
    cached = [timed(lambda: client.get(url)) for _ in range(repeats * 4)]
    return {"prediction_uncached": stats(uncached), "prediction_cached": stats(cached)}


def bench_heatmap(client, coords: np.ndarray, patch: int, rng: np.random.Generator, repeats: int) -> dict:
    from acmil.heatmap import render_heatmap

    heat_url = f"{API}/slides/heat/heatmap.png?max_size=2048"
    client.get(f"{API}/slides/heat/prediction")  # the heatmap benchmark starts from a known prediction
    # A new alpha each time defeats the PNG cache: every request renders and encodes.
    heat = [
        timed(lambda i=i: client.get(f"{heat_url}&alpha={0.3 + i / 1000:.3f}")) for i in range(max(5, repeats // 2))
    ]
    cached = [timed(lambda: client.get(heat_url)) for _ in range(10)]
    scores = rng.random(len(coords))
    size = (int(coords[:, 0].max()) + patch, int(coords[:, 1].max()) + patch)
    render = [timed(lambda: render_heatmap(coords, scores, patch, size)) for _ in range(5)]
    loop = [timed(lambda: naive_heatmap(coords, scores, patch, size, 2048)) for _ in range(2)]
    return {
        "heatmap_png_api": stats(heat),
        "heatmap_png_api_cached": stats(cached),
        "heatmap_render": stats(render),
        "baseline_heatmap_loop": stats(loop),
    }


def bench_tiles(client, repeats: int) -> dict:
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    slide_id = "CMU-1-Small-Region"
    with openslide.OpenSlide(SHARED_SLIDE) as slide:
        dz = DeepZoomGenerator(slide, 254, 1, limit_bounds=False)
        addresses = [
            (level, col, row)
            for level in range(dz.level_count - 4, dz.level_count)
            for col in range(dz.level_tiles[level][0])
            for row in range(dz.level_tiles[level][1])
        ]
        random.Random(0).shuffle(addresses)
        addresses = addresses[: max(60, repeats * 6)]
        direct = [timed(lambda a=a: dz.get_tile(a[0], (a[1], a[2]))) for a in addresses]
    client.get(f"{API}/slides/{slide_id}/slide.dzi")
    slide_tiles = [
        timed(lambda a=a: client.get(f"{API}/slides/{slide_id}/slide_files/{a[0]}/{a[1]}_{a[2]}.jpeg"))
        for a in addresses
    ]
    client.get(f"{API}/slides/{slide_id}/attention.dzi")  # renders the overlay once
    overlay = [
        timed(lambda a=a: client.get(f"{API}/slides/{slide_id}/attention_files/{a[0]}/{a[1]}_{a[2]}.png"))
        for a in addresses
    ]
    return {
        "baseline_tile_direct": stats(direct),
        "slide_tile_api": stats(slide_tiles),
        "overlay_tile_api": stats(overlay),
    }


def report(r: dict) -> None:
    def line(name: str, key: str, base: str | None = None, target: float | None = None, field: str = "p50_ms"):
        if key not in r or not isinstance(r[key], dict):
            return
        value = r[key][field]
        text = f"{name:<34} p50 {r[key]['p50_ms']:8.1f} ms   p95 {r[key]['p95_ms']:8.1f} ms"
        if base and base in r:
            text += f"   x{value / r[base][field]:.2f} vs {base} ({r[base][field]:.1f} ms)"
        if target is not None:
            text += f"   target {field[:3]} < {target:.0f} ms: {'OK' if value < target else 'MISSED'}"
        print(text)

    print(f"machine: {r['machine']}")
    cfg = r["config"]
    print(f"prediction file: {cfg['tiles']} tiles x D={cfg['dim']}; heatmap: {cfg['heatmap_tiles']} tiles")
    line("baseline: model forward", "baseline_forward")
    line("prediction, uncached (API)", "prediction_uncached", "baseline_forward", 300)
    line("prediction, cached (API)", "prediction_cached", "prediction_uncached")
    line("baseline: per-tile PIL loop", "baseline_heatmap_loop")
    line("heatmap render (function)", "heatmap_render", "baseline_heatmap_loop", 1000)
    line("heatmap.png (API)", "heatmap_png_api", "baseline_heatmap_loop", 1000)
    line("heatmap.png, cached (API)", "heatmap_png_api_cached", "heatmap_png_api")
    line("baseline: DeepZoomGenerator", "baseline_tile_direct")
    line("slide tile (API)", "slide_tile_api", "baseline_tile_direct", 150, "p95_ms")
    line("overlay tile (API)", "overlay_tile_api", "baseline_tile_direct", 150, "p95_ms")


if __name__ == "__main__":
    sys.exit(main())
