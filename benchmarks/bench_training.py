"""Training speed and memory of ``acmil train`` against a plain PyTorch loop, on a generated cohort.

The baseline trains the same model the way the reference code does: one bag at a time, read the slide's
features from its .h5 file, forward, loss, backward, AdamW step, per-step cosine schedule, ``loss.item()``
for logging. ``acmil train`` runs through the same LightningCLI as the command (MILModule +
FeatureDataModule + Trainer) with an epoch timer added. Each variant runs in its own process, so peak RSS
(``ru_maxrss``) is that variant's alone. Epoch time = training part of an epoch (validation excluded, the
baseline has none), median over the epochs after the first (the first pays for worker start-up).

    python benchmarks/bench_training.py                        # CPU, scaled-down cohort
    python benchmarks/bench_training.py --slides 200 --patches 8000 --device cuda   # the issue's size
    python benchmarks/bench_training.py --help-times             # --help of train/test/cv/predict

Writes bench_out/training_<device>.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process (DataLoader workers are separate processes, not counted)."""
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker_plain(args: argparse.Namespace) -> dict:
    import h5py
    import numpy as np
    import torch

    from acmil.models import create_model

    train = json.loads(Path(args.train_list).read_text())  # [[path, label], ...]
    torch.manual_seed(0)
    model = create_model("acmil", in_dim=args.dim, n_classes=2).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(train))
    rng = np.random.default_rng(0)
    times = []
    for _ in range(args.epochs):
        _sync(args.device)
        start = time.perf_counter()
        for i in rng.permutation(len(train)):
            path, label = train[i]
            with h5py.File(path, "r") as f:
                feats = torch.from_numpy(f["features"][:]).to(args.device)[None]  # (1, N, D)
            target = torch.tensor([label], device=args.device)
            out = model(feats)
            loss = model.compute_loss(out, target)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            _ = loss.item()  # the reference logs the loss every step
        _sync(args.device)
        times.append(time.perf_counter() - start)
    return {"epoch_times": times}


def worker_lightning(args: argparse.Namespace) -> dict:
    import warnings

    from lightning.pytorch.callbacks import Callback

    from acmil.training.lightning_run import ACMILCLI
    from acmil.training.rundir import RunOptions

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start: float | None = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            _sync(args.device)
            self._start = time.perf_counter()

        def _stop(self) -> None:
            if self._start is not None:
                _sync(args.device)
                self.times.append(time.perf_counter() - self._start)
                self._start = None

        def on_validation_start(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self._stop()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._stop()

    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    argv = [
        "--data.features_dir",
        args.features,
        "--data.labels_csv",
        args.labels,
        "--data.batch_size",
        str(args.batch),
        "--data.num_workers",
        str(args.workers),
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.default_root_dir",
        args.run_dir,
        "--trainer.accelerator",
        accelerator,
        "--trainer.precision",
        args.precision,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.num_sanity_val_steps",
        "0",
        "--seed_everything",
        "0",
    ] + (["--data.pin_memory", args.pin] if args.pin else [])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = ACMILCLI(argv, options=RunOptions(overwrite=True))  # a rerun replaces its run folder
    scan = time.perf_counter() - start  # parse + instantiate (includes the one streamed NaN/inf check)
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    fit_start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {"epoch_times": timer.times, "setup_s": round(scan, 2), "fit_s": round(time.perf_counter() - fit_start, 2)}


def _run_worker(kind: str, common: list[str], extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *common, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {extra} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["epoch_s"] = statistics.median(result["epoch_times"][1:] or result["epoch_times"])
    return result


def _variant_args(spec: str) -> list[str]:
    """'b8w4' = 8 bags a step, 4 workers; suffix 'p0' = no pinned memory, 'bf16' = bf16-mixed."""
    m = re.fullmatch(r"b(\d+)w(\d+)(p0)?(bf16)?", spec)
    if not m:
        raise SystemExit(f"bad variant {spec!r} (expected e.g. b8w4, b8w8p0, b8w4bf16)")
    extra = ["--batch", m[1], "--workers", m[2]]
    extra += ["--pin", "false"] if m[3] else []
    extra += ["--precision", "bf16-mixed"] if m[4] else []
    return extra


def _subset_labels(labels: Path, fraction: float, out: Path) -> Path:
    with labels.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = rows[: max(10, int(len(rows) * fraction))]
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slides", type=int, default=60)
    p.add_argument("--patches", type=int, default=4000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8, help="bags per step of the batched variant")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of the worker variants")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in every variant (0: torch's default)")
    p.add_argument("--cohort", default=None, help="reuse a generated cohort folder")
    p.add_argument("--out", default=str(REPO / "bench_out"))
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--bf16-variant", action="store_true", help="also time the batched variant under bf16-mixed")
    p.add_argument("--variants", default="", help="comma-separated, e.g. b1w0,b1w4,b8w8,b8w8p0,b8w4bf16")
    p.add_argument("--pin", default="", help=argparse.SUPPRESS)
    # worker mode (internal)
    p.add_argument("--worker", default=None)
    p.add_argument("--features", default="")
    p.add_argument("--labels", default="")
    p.add_argument("--train-list", default="")
    p.add_argument("--run-dir", default="")
    p.add_argument(
        "--help-times",
        action="store_true",
        help="only time `acmil --help` and `acmil train/test/cv/predict --help` against `import lightning` (what "
        "they cost when the help came from LightningCLI)",
    )
    args = p.parse_args()
    if args.help_times:
        help_times(Path(args.out))
        return
    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = worker_plain(args) if args.worker == "plain" else worker_lightning(args)
        print(json.dumps({**result, **_peak_rss_mb()}))
        return

    from acmil.synthetic.features import make_cohort
    from acmil.training.data import FeatureDataModule

    tmp = Path(args.cohort or tempfile.mkdtemp(prefix="acmil_bench_"))
    t0 = time.perf_counter()
    if not (tmp / "labels.csv").is_file():
        make_cohort(tmp, n_slides=args.slides, n_patches=(args.patches, args.patches), dim=args.dim, seed=0)
    gen_s = time.perf_counter() - t0
    features, labels = str(tmp / "features"), tmp / "labels.csv"
    dm = FeatureDataModule(features, labels, seed=0, check_values=False)
    train = [[str(dm.cohort.paths[i]), dm.cohort.targets[i]] for i in dm.splits["train"]]
    (tmp / "train.json").write_text(json.dumps(train))
    common = [
        "--features",
        features,
        "--labels",
        str(labels),
        "--train-list",
        str(tmp / "train.json"),
        "--dim",
        str(args.dim),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--threads",
        str(args.threads),
    ]
    runs: dict[str, dict] = {}
    w, b = args.workers, args.batch
    specs = args.variants.split(",") if args.variants else ["b1w0", f"b1w{w}", f"b{b}w{w}"]
    if args.bf16_variant and not args.variants:
        specs.append(f"b{b}w{w}bf16")
    plan = {"plain_loop_b1": ("plain", [])}
    for spec in specs:
        plan[f"acmil_{spec}"] = ("lightning", _variant_args(spec))
    for name, (kind, extra) in plan.items():
        runs[name] = _run_worker(kind, common, [*extra, "--run-dir", str(tmp / f"run_{name}")])
        r = runs[name]
        print(f"{name:>20}: {r['epoch_s']:.3f} s/epoch, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    base = runs["plain_loop_b1"]["epoch_s"]
    ratios = {name: round(r["epoch_s"] / base, 3) for name, r in runs.items()}
    memory = []
    if not args.skip_memory:
        for frac in (0.25, 0.5, 1.0):
            sub = _subset_labels(labels, frac, tmp / f"labels_{frac}.csv")
            r = _run_worker(
                "lightning",
                [*common[:3], str(sub), *common[4:]],
                ["--batch", "1", "--workers", "0", "--epochs", "1", "--run-dir", str(tmp / f"mem_{frac}")],
            )
            n = sum(1 for _ in sub.open()) - 1
            memory.append(
                {
                    "slides": n,
                    "cohort_mb": round(n * args.patches * args.dim * 4 / 2**20),
                    "peak_rss_mb": r["peak_rss_mb"],
                }
            )
            mb = memory[-1]["cohort_mb"]
            print(f"memory: {n} slides ({mb} MB of features): peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    result = {
        "cohort": {
            "slides": args.slides,
            "patches": args.patches,
            "dim": args.dim,
            "train_slides": len(train),
            "generate_s": round(gen_s, 1),
        },
        "device": args.device,
        "device_name": _device_name(args.device),
        "torch_threads": args.threads or _torch_threads(),
        "cpus": os.cpu_count(),
        "epochs": args.epochs,
        "precision": args.precision,
        "runs": runs,
        "time_ratio_vs_plain_loop": ratios,
        "memory_vs_cohort": memory,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"training_{args.device.split(':')[0]}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({"time_ratio_vs_plain_loop": ratios}, indent=2))
    print(f"wrote {path}")


def help_times(out: Path, repeats: int = 3) -> dict:
    """Wall time (median of ``repeats`` fresh processes) of ``acmil --help`` and each training command's --help,
    and of importing Lightning in a fresh process, the floor of any help printed by LightningCLI (the old --help)."""

    def wall(cmd: list[str]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return round(statistics.median(times), 3)

    baseline = wall([sys.executable, "-c", "import lightning.pytorch"])
    result = {"import_lightning_s": baseline, "help_s": wall([sys.executable, "-m", "acmil", "--help"])}
    print(
        f"acmil --help: {result['help_s']:.2f} s ({result['help_s'] / baseline:.2f} x importing Lightning)", flush=True
    )
    for command in ("train", "test", "cv", "predict"):
        result[f"{command}_help_s"] = wall([sys.executable, "-m", "acmil", command, "--help"])
        print(
            f"acmil {command} --help: {result[f'{command}_help_s']:.2f} s "
            f"({result[f'{command}_help_s'] / baseline:.2f} x importing Lightning, {baseline:.2f} s)",
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "help_times.json").write_text(json.dumps(result, indent=2))
    return result


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
