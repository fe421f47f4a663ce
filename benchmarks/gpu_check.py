"""GPU paths of the product, checked and timed in one run: model autocast (bf16, fp16), `acmil train` with
bf16-mixed / 16-mixed / DDP, the training benchmark on CUDA, and feature extraction on the GPU.

    python benchmarks/gpu_check.py --out bench_out/gpu      # on a CUDA machine
    python benchmarks/gpu_check.py --out /tmp/x --tiny      # dry run of the script itself on CPU

Writes gpu_check.json with every check's outcome and timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS: dict = {}


def check(name: str):
    def wrap(fn):
        def run(*a, **k):
            start = time.perf_counter()
            try:
                RESULTS[name] = {"ok": True, **(fn(*a, **k) or {})}
            except Exception as err:  # noqa: BLE001 - record and go on with the other checks
                RESULTS[name] = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
            RESULTS[name]["seconds"] = round(time.perf_counter() - start, 2)
            print(f"[{name}] {json.dumps({k: v for k, v in RESULTS[name].items() if k != 'trace'})}", flush=True)

        return run

    return wrap


def _acmil(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "acmil", *args], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"acmil {args[0]} exited {proc.returncode}: {log.read_text()[-1500:]}")
    return time.perf_counter() - start


@check("environment")
def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


@check("model_autocast")
def model_autocast(device: str) -> dict:
    import torch

    from acmil.models import ACMIL

    out = {}
    for dtype in (torch.bfloat16, torch.float16):
        torch.manual_seed(0)
        model = ACMIL(512, 2).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
        x = torch.randn(4, 8000, 512, device=device) * 4
        mask = torch.ones(4, 8000, dtype=torch.bool, device=device)
        mask[1, 5000:] = False
        target = torch.tensor([0, 1, 1, 0], device=device)
        with torch.autocast(device, dtype=dtype):
            res = model(x, mask)
            loss = model.compute_loss(res, target)["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        att = res.attention
        assert att.dtype == torch.float32, att.dtype
        assert torch.isfinite(loss), loss
        assert (att[1, :, 5000:] == 0).all()
        assert torch.allclose(att.sum(-1), torch.ones_like(att.sum(-1)), atol=1e-5)
        assert ((att == 0).sum(-1)[0] == 6).all()
        out[str(dtype).split(".")[-1]] = {"loss": round(loss.item(), 4)}
    return out


@check("train_cli")
def train_cli(device: str, work: Path, tiny: bool, only_variants: list[str] | None = None) -> dict:
    from acmil.synthetic.features import make_cohort

    cohort = make_cohort(work / "cohort", n_slides=40 if not tiny else 20, n_patches=(500, 2000), dim=512, signal=1.0)
    accel = ["--trainer.accelerator", "gpu" if device == "cuda" else "cpu", "--trainer.devices", "1"]
    variants = {
        "fp32": ["--trainer.precision", "32-true"],
        "bf16": ["--trainer.precision", "bf16-mixed"],
        "fp16": ["--trainer.precision", "16-mixed"],
        "ddp_bf16": ["--trainer.precision", "bf16-mixed", "--trainer.strategy", "ddp"],
        "bf16_batch8": ["--trainer.precision", "bf16-mixed", "--data.batch_size", "8"],
    }
    out = {}
    for name, extra in variants.items():
        if (device != "cuda" and name in ("fp16", "ddp_bf16")) or (only_variants and name not in only_variants):
            continue
        run = work / f"run_{name}"
        seconds = _acmil(
            [
                "train",
                "--config",
                str(REPO / "configs/acmil.yaml"),
                "--data.features_dir",
                str(cohort.features_dir),
                "--data.labels_csv",
                str(cohort.labels_csv),
                "--trainer.max_epochs",
                "3" if tiny else "10",
                "--trainer.default_root_dir",
                str(run),
                "--seed_everything",
                "0",
                "--trainer.enable_progress_bar",
                "false",
                *accel,
                *extra,
            ],
            work / f"train_{name}.log",
        )
        metrics = json.loads((run / "metrics.json").read_text())
        assert (run / "checkpoints" / "best.ckpt").is_file()
        out[name] = {"seconds": round(seconds, 1), "val_auc": metrics["val"]["auc"], "test_auc": metrics["test"]["auc"]}
    return out


@check("bench_training")
def bench_training(device: str, out_dir: Path, tiny: bool) -> dict:
    size = (
        ["--slides", "8", "--patches", "500", "--epochs", "2"]
        if tiny
        else ["--slides", "200", "--patches", "8000", "--epochs", "3", "--workers", "4", "--bf16-variant"]
    )
    cmd = [sys.executable, str(REPO / "benchmarks/bench_training.py"), "--device", device, "--out", str(out_dir), *size]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out_dir / "bench_training.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    path = out_dir / f"training_{device}.json"
    return json.loads(path.read_text()) if path.exists() else {"stdout": proc.stdout[-2000:]}


@check("preprocess_gpu")
def preprocess_gpu(device: str, work: Path, tiny: bool) -> dict:
    import timm
    import torch

    out = {}
    # Encoder alone on tensors in GPU memory: the ceiling the pipeline is compared with.
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    batch = 256 if device == "cuda" else 8
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for _ in range(3):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        start, n = time.perf_counter(), 5 if not tiny else 1
        for _ in range(n):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
    out["encoder_only_tiles_per_s"] = round(batch * n / (time.perf_counter() - start), 1)
    slides = work / "slides"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "acmil.synthetic.slides",
            "--out",
            str(slides),
            "--n-slides",
            "4" if not tiny else "2",
            "--seed",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    args = [
        "preprocess",
        "--slides",
        str(slides / "slides"),
        "--out",
        str(work / "pre"),
        "--encoder",
        "resnet18",
        "--weights",
        "random",
        "--batch-size",
        str(batch),
        "--workers",
        "8" if device == "cuda" else "1",
        "--no-progress",
    ]
    seconds = _acmil(args, work / "preprocess.log")
    import csv

    rows = list(csv.DictReader((work / "pre" / "manifest.csv").open()))
    tiles = sum(int(r["n_tiles"]) for r in rows if r["status"] == "ok")
    assert all(r["status"] == "ok" for r in rows), rows
    out.update({"slides": len(rows), "tiles": tiles, "pipeline_seconds": round(seconds, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="small sizes, for a dry run on CPU")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--variants", nargs="*", default=None, help="train_cli variants to run (default all)")
    args = parser.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "acmil_gpu_check"
    work.mkdir(parents=True, exist_ok=True)
    steps = {
        "environment": lambda: environment(device),
        "model_autocast": lambda: model_autocast(device),
        "train_cli": lambda: train_cli(device, work, args.tiny, args.variants),
        "preprocess_gpu": lambda: preprocess_gpu(device, work, args.tiny),
        "bench_training": lambda: bench_training(device, args.out, args.tiny),
    }
    for name, step in steps.items():
        if args.only is None or name in args.only:
            step()
            (args.out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=2))
    for log in work.glob("*.log"):
        (args.out / log.name).write_text(log.read_text()[-20000:])
    failed = [k for k, v in RESULTS.items() if not v["ok"]]
    print("FAILED: " + ", ".join(failed) if failed else "all GPU checks passed")


if __name__ == "__main__":
    main()
