"""Hostile uploads to ``POST /api/v1/predict`` on a real server: time to answer and the server's memory.

Run:  python benchmarks/bench_upload_attack.py [--timeout 120] [--out bench_out/bench_upload_attack.json]

Starts ``acmil serve`` (uvicorn, a subprocess) with an untrained 512-wide ACMIL checkpoint and sends three
crafted files at once (issue 9, High 1), sampling the server's RSS (psutil, children included) every
50 ms:
- ``unwritten``: features (1,000,000 × 512) float32 and coords of the same length, no data written
  (about 2 KB on disk; reading it materialises 2 GB of fill values);
- ``gzip_bomb``: the same shape, written as gzip-compressed zeros (a few MB on disk);
- ``wide``: features 100 × 10,000,000 (about 2 KB; 4 GB when read).
The baseline is the server's idle RSS measured in the same run, before the uploads.

``--near-cap`` adds a second round: three honest uploads at once, each at the decode limit (262,144 × 512
float16 features, 256 MB on disk, 512 MiB as float32), which shows the memory the limits allow: two are
decoded and predicted at once (``max_concurrent_uploads``), the third waits for a slot or gets a 503.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

API = "/api/v1"


def hostile_files(folder: Path) -> dict[str, Path]:
    """The three crafted uploads of issue 9 (High 1)."""
    files = {}
    path = files["unwritten"] = folder / "unwritten.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", (1_000_000, 512), "f4", chunks=(1024, 512))
        h5.create_dataset("coords", (1_000_000, 2), "i8", chunks=(1024, 2))
    path = files["gzip_bomb"] = folder / "gzip_bomb.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("features", (1_000_000, 512), "f4", chunks=(4096, 512), compression="gzip")
        zeros = np.zeros((4096, 512), np.float32)
        for start in range(0, 1_000_000, 4096):
            stop = min(start + 4096, 1_000_000)
            ds[start:stop] = zeros[: stop - start]
        h5.create_dataset("coords", data=np.zeros((1_000_000, 2), np.int64), compression="gzip")
    path = files["wide"] = folder / "wide.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", (100, 10_000_000), "f4", chunks=(1, 1_000_000))
        h5.create_dataset("coords", (100, 2), "i8")
    return files


def near_cap_files(folder: Path, copies: int = 3) -> dict[str, Path]:
    """``copies`` links to one honest file at the default decode limit (512 MiB of float32 features)."""
    rows = 512 * 1024 * 1024 // (512 * 4)
    path = folder / "near_cap.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("features", (rows, 512), "f2", chunks=(1024, 512))
        for start in range(0, rows, 16384):
            ds[start : start + 16384] = rng.normal(size=(16384, 512)).astype("f2")
        h5["coords"] = np.stack([np.arange(rows) % 512, np.arange(rows) // 512], axis=1).astype("i8") * 224
    files = {}
    for i in range(copies):
        files[f"near_cap_{i}"] = folder / f"near_cap_{i}.h5"
        os.link(path, files[f"near_cap_{i}"])
    return files


def checkpoint(path: Path, dim: int = 512) -> Path:
    import torch

    from acmil.checkpoint import ModelCard, save_model
    from acmil.models import ACMIL

    torch.manual_seed(0)
    model = ACMIL(dim, 2, n_branches=3, top_k=4, mask_ratio=0.5).eval()
    card = ModelCard(
        arch="acmil",
        arch_args={"n_branches": 3, "top_k": 4, "mask_ratio": 0.5},
        in_dim=dim,
        class_names=["normal", "tumour"],
        encoder={"encoder": "synthetic"},
    )
    return save_model(path, model, card)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(ckpt: Path, features: Path, port: int, log: Path) -> subprocess.Popen:
    import httpx

    command = [
        sys.executable,
        "-m",
        "acmil",
        "serve",
        "--checkpoint",
        str(ckpt),
        "--features",
        str(features),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def rss(process) -> int:
    """Resident bytes of a psutil process and its children."""
    import psutil

    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def attack(base: str, files: dict[str, Path], pid: int, timeout: float) -> dict:
    """Send every file at once; returns per-file status/seconds/detail and the server's idle and peak RSS."""
    import httpx
    import psutil

    server = psutil.Process(pid)
    idle = rss(server)
    peak = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss(server))
            time.sleep(0.05)

    results: dict[str, dict] = {}

    def send(name: str, path: Path) -> None:
        start = time.perf_counter()
        try:
            with path.open("rb") as handle:
                reply = httpx.post(f"{base}{API}/predict", files={"file": (path.name, handle)}, timeout=timeout)
            results[name] = {
                "status": reply.status_code,
                "detail": reply.json().get("detail")
                if reply.headers.get("content-type", "").startswith("application/json")
                else None,
            }
        except httpx.HTTPError as err:
            results[name] = {"status": None, "detail": f"{type(err).__name__}: {err}"}
        results[name]["seconds"] = round(time.perf_counter() - start, 3)
        results[name]["upload_bytes"] = path.stat().st_size

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=send, args=item) for item in files.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.3)
    done.set()
    sampler.join()
    return {
        "uploads": results,
        "idle_rss_mb": round(idle / 2**20, 1),
        "peak_rss_mb": round(peak[0] / 2**20, 1),
        "peak_minus_idle_mb": round((peak[0] - idle) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="per-upload client timeout (s)")
    parser.add_argument("--near-cap", action="store_true", help="also send three honest uploads at the decode limit")
    parser.add_argument("--out", type=Path, default=Path("bench_out/bench_upload_attack.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acmil-attack-") as tmp:
        root = Path(tmp)
        (root / "features").mkdir()
        files = hostile_files(root)
        ckpt = checkpoint(root / "model.ckpt")
        port = free_port()
        log = root / "server.log"
        process = start_server(ckpt, root / "features", port, log)
        try:
            report = attack(f"http://127.0.0.1:{port}", files, process.pid, args.timeout)
            if args.near_cap:
                report["near_cap"] = attack(f"http://127.0.0.1:{port}", near_cap_files(root), process.pid, args.timeout)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        report["server_log_tail"] = log.read_text()[-2000:]
    report["cpu_count"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
