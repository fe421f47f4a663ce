"""New-slide benchmark: upload to prediction through the service's job queue, against doing it by hand.

On one generated slide (pyramidal TIFF, 0.5 µm/px) and a model whose recipe is resnet18 (random weights:
speed does not depend on them) on 64-px tiles at ``--target-mpp``, fed as they are:

- ``job``: a running ``acmil serve`` (embedded SQLite huey queue), ``POST /api/v1/slides`` (multipart upload)
  until the job is ``done``, split by stage (upload, queued, reading, segmenting, encoding, predicting);
- ``by_hand``: ``acmil preprocess`` then ``acmil predict --features``, two commands as a user types them
  (process start and model load included), in the same run; ``ratio`` = job / by hand (target <= 1.10);
- ``jobs_per_hour``: ``--n-small`` small slides through a real ``redis-server`` with one ``acmil worker``,
  then with two;
- ``predict_slides``: ``acmil predict --slides`` on the slide, then again on its cached features
  (``cached_over_first``: the rerun reads the cache and encodes nothing).

Every process (server, workers, the two commands) runs with ``OMP_NUM_THREADS=1``: on a shared CPU, torch's
default of one thread per core oversubscribes it and hides the comparison behind contention.

    python benchmarks/bench_jobs.py [--width 20480 --height 16384 --target-mpp 1.0] [--out bench_out]

Writes ``bench_out/jobs.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its tests.helpers package

from tests.helpers.server import Proc, client, free_port, start_server, upload, wait_job  # noqa: E402
from tests.helpers.slides import make_checkpoint, make_slide  # noqa: E402


def recipe_args(target_mpp: float) -> list[str]:
    return [
        "--encoder",
        "resnet18",
        "--weights",
        "random",
        "--resize",
        "none",
        "--tile-size",
        "64",
        "--target-mpp",
        str(target_mpp),
        "--batch-size",
        "32",
        "--no-progress",
        "--no-qc",
    ]


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    # the same environment as the server's (tests.helpers.server: one OpenMP thread), so only the path differs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def by_hand(slide: Path, ckpt: Path, root: Path, target_mpp: float) -> dict:
    out = root / "by_hand"
    shutil.rmtree(out, ignore_errors=True)
    folder = root / "hand_slides"
    folder.mkdir(exist_ok=True)
    link = folder / slide.name
    if not link.exists():
        os.link(slide, link)
    pre = run(
        [
            sys.executable,
            "-m",
            "acmil",
            "preprocess",
            "--slides",
            str(folder),
            "--out",
            str(out),
            *recipe_args(target_mpp),
        ]
    )
    pred = run(
        [
            sys.executable,
            "-m",
            "acmil",
            "predict",
            "--checkpoint",
            str(ckpt),
            "--features",
            str(out / "features"),
            "--out",
            str(out / "p.csv"),
        ]
    )
    return {"preprocess_s": round(pre, 2), "predict_s": round(pred, 2), "total_s": round(pre + pred, 2)}


def job(slide: Path, ckpt: Path, root: Path) -> dict:
    features = root / "features"
    shutil.rmtree(features, ignore_errors=True)
    shutil.rmtree(root / "jobs", ignore_errors=True)
    features.mkdir()
    server, base = start_server(ckpt, features, root / "jobs", root / "server.log")
    try:
        c = client(base)
        t0 = time.perf_counter()
        r = upload(c, slide)
        t_up = time.perf_counter() - t0
        done = wait_job(c, r.json()["job_id"], timeout=3600)
        total = time.perf_counter() - t0
    finally:
        server.stop()
    queued = done["started"] - done["created"]
    return {
        "total_s": round(total, 2),
        "upload_s": round(t_up, 2),
        "queued_s": round(queued, 2),
        "stages_s": {k: round(v, 2) for k, v in done["seconds"].items()},
        "tiles": done["tiles_total"],
        "state": done["state"],
    }


def predict_slides(slide: Path, ckpt: Path, root: Path) -> dict:
    """``acmil predict --slides`` twice into one output folder: the first run encodes, the second reads its cache."""
    folder, out = root / "predict_slides", root / "predict_out"
    folder.mkdir(exist_ok=True)
    if not (folder / slide.name).exists():
        os.link(slide, folder / slide.name)
    cmd = [sys.executable, "-m", "acmil", "predict", "--checkpoint", str(ckpt), "--slides", str(folder)]
    first, cached = run([*cmd, "--out", str(out)]), run([*cmd, "--out", str(out)])
    return {"first_s": round(first, 2), "cached_s": round(cached, 2), "cached_over_first": round(cached / first, 3)}


def throughput(ckpt: Path, root: Path, n_workers: int, n_slides: int, redis_bin: str) -> dict:
    imports = root / "imports"
    port = free_port()
    redis_proc = Proc(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(root)], root / "redis.log"
    )
    time.sleep(0.5)
    url = f"redis://127.0.0.1:{port}/0"
    workers = [
        Proc([sys.executable, "-m", "acmil", "worker", "--queue", url], root / f"w{n_workers}_{i}.log")
        for i in range(n_workers)
    ]
    features = root / f"features_tp{n_workers}"
    features.mkdir(exist_ok=True)
    server = None
    try:
        server, base = start_server(
            ckpt,
            features,
            root / f"jobs_tp{n_workers}",
            root / "server_tp.log",
            "--queue",
            url,
            "--no-embedded-worker",
            "--import-dir",
            str(imports),
            "--max-jobs-per-client",
            "100",
        )
        c = client(base)
        time.sleep(3)  # let the workers connect and load nothing yet (they load on their first job)
        t0 = time.perf_counter()
        ids = [c.post("/slides", json={"path": f"t{i}.tif"}).json()["job_id"] for i in range(n_slides)]
        states = [wait_job(c, i, timeout=3600)["state"] for i in ids]
        seconds = time.perf_counter() - t0
    finally:
        for p in ([server] if server else []) + workers + [redis_proc]:
            p.stop()
    return {
        "workers": n_workers,
        "slides": n_slides,
        "seconds": round(seconds, 2),
        "all_done": set(states) == {"done"},
        "jobs_per_hour": round(3600 * n_slides / seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=20480)
    p.add_argument("--height", type=int, default=16384)
    p.add_argument("--target-mpp", type=float, default=1.0)
    p.add_argument("--n-small", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    try:
        t0 = time.perf_counter()
        slide = make_slide(root / "slides" / "bench.tif", seed=5, width=args.width, height=args.height)
        gen = time.perf_counter() - t0
        # the recipe: from a feature file of the same settings (a tiny slide preprocessed first)
        tiny = make_slide(root / "tiny" / "tiny.tif", seed=6)
        run(
            [
                sys.executable,
                "-m",
                "acmil",
                "preprocess",
                "--slides",
                str(tiny.parent),
                "--out",
                str(root / "rp"),
                *recipe_args(args.target_mpp),
            ]
        )
        from acmil.recipe import recipe_from_file

        ckpt = make_checkpoint(root / "model.ckpt", recipe_from_file(root / "rp" / "features" / "tiny.h5"))
        result: dict = {
            "slide": {"width": args.width, "height": args.height, "mpp": 0.5, "generation_s": round(gen, 1)},
            "recipe": f"resnet18 random, 64 px tiles at {args.target_mpp:g} µm/px, no resize, batch 32",
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        }
        result["by_hand"] = by_hand(slide, ckpt, root, args.target_mpp)
        result["job"] = job(slide, ckpt, root)
        result["by_hand_again"] = by_hand(slide, ckpt, root, args.target_mpp)  # order effects on a shared CPU
        hand = (result["by_hand"]["total_s"] + result["by_hand_again"]["total_s"]) / 2
        result["ratio_job_over_by_hand"] = round(result["job"]["total_s"] / hand, 3)
        result["predict_slides"] = predict_slides(slide, ckpt, root)
        redis_bin = shutil.which("redis-server")
        if redis_bin and args.n_small:
            for i in range(args.n_small):
                make_slide(root / "imports" / f"t{i}.tif", seed=100 + i, width=4096, height=3072)
            result["throughput"] = [throughput(ckpt, root, n, args.n_small, redis_bin) for n in (1, 2)]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "jobs.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
