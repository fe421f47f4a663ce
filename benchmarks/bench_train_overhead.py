"""The whole ``acmil train`` command against a plain PyTorch loop doing the same work, start-up included.

Each side runs as its own process on one thread (``OMP_NUM_THREADS=1``); the figures are the child's CPU
time (user + sys, ``RUSAGE_CHILDREN``) and wall time of the whole command, and the CPU time of one whole epoch
(training + validation + checkpoints + logging; median of the epochs after the first, measured in the process
with ``time.process_time``: ``epoch_clock.py`` on the Lightning side).
The plain loop is what the reference code does: one bag a
step read from its .h5 file, AdamW, per-step cosine schedule, ``loss.item()`` every step, and a validation
pass per epoch (eval mode, loss and probabilities of every validation bag) keeping the best weights; it
trains on the split ``acmil train`` wrote (``RUN/splits.json``), so both see the same bags. ``plain_cached`` is the
same loop with every bag held in memory after its first read, as ``acmil train`` does by default
(``--data.cache auto``): the framework's own overhead, with the I/O equal on both sides.

Start-up: ``import lightning.pytorch`` costs seconds more than the plain loop's ``import torch`` (torchmetrics,
which Lightning imports, imports scipy.signal and torchvision's models); no change inside acmil can remove that,
so it is measured in the same run (``import_floor_s``: ``import lightning.pytorch`` minus ``import torch,
torch._dynamo``, since the plain loop imports ``torch._dynamo`` too, on its first optimizer step) and the ratios
are also given without it (``cpu_minus_import``).

Cohorts (written as real feature files with ``acmil.features``):
  small: Musk1-like, 74 bags of 2-8 instances (mean ~5) x 166 features, 10 epochs;
  wsi:   WSI-sized, 4,000 x 512 bags (``--wsi-slides``, default 20), 3 epochs: the per-epoch ratio.

``--baseline-src DIR`` also times ``acmil train`` from another source tree (before/after in the same run).

    python benchmarks/bench_train_overhead.py                       # CPU, both cohorts
    python benchmarks/bench_train_overhead.py --device cuda --sizes small,wsi

Writes bench_out/train_overhead_<device>.json and prints the ratios (acmil / plain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    # name: (slides, (min, max) instances, feature width, epochs)
    "small": (74, (2, 8), 166, 10),
    "wsi": (20, (4000, 4000), 512, 3),
}


def _timed(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; its CPU seconds (user + sys, its own children included) and wall seconds."""
    start = time.perf_counter()
    cwd = env.get("ACMIL_BENCH_CWD", REPO)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    # communicate() has reaped the child; its rusage is in RUSAGE_CHILDREN, so measure the delta around it.
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{err[-4000:]}")
    return {"wall_s": wall, "stdout": out}


def _run(cmd: list[str], env: dict[str, str]) -> dict:
    import resource
    import statistics

    clock = Path(tempfile.mkstemp(suffix=".json")[1])
    env = {**env, "ACMIL_BENCH_EPOCHS": str(clock)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = _timed(cmd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    epochs = json.loads(clock.read_text() or "[]")
    clock.unlink()
    # median epoch after the first (which pays for first-use costs on both sides)
    epoch = statistics.median(epochs[1:] or epochs) if epochs else None
    return {"cpu_s": round(cpu, 3), "wall_s": round(result["wall_s"], 3), "epoch_cpu_s": epoch, "epochs_cpu_s": epochs}


def _import_cpu(module: str, env: dict[str, str]) -> float:
    """CPU seconds of a process that only imports ``module``."""
    # gc.freeze() as ``acmil`` does at exit (acmil.cli.run), so the figure is the import alone, not shutdown
    return _run([sys.executable, "-c", f"import {module}; import gc; gc.freeze()"], env)["cpu_s"]


def worker_plain(args: argparse.Namespace) -> None:
    """The plain loop (see the module docstring)."""
    import h5py
    import numpy as np
    import torch

    from acmil.models import create_model

    torch.set_num_threads(1)
    device = torch.device(args.device)
    splits = json.loads((Path(args.run) / "splits.json").read_text())
    names = splits["class_names"]
    labels = {}
    for line in Path(args.labels).read_text().splitlines()[1:]:
        sid, label = line.split(",")[:2]
        labels[sid] = names.index(label)
    feats_dir = Path(args.features)

    held: dict[str, torch.Tensor] = {}

    def bag(sid: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = held.get(sid)
        if x is None:
            with h5py.File(feats_dir / f"{sid}.h5", "r") as f:
                x = torch.from_numpy(f["features"][()]).to(device)[None]  # (1, N, D)
            if args.cached:
                held[sid] = x
        return x, torch.tensor([labels[sid]], device=device)

    torch.manual_seed(0)
    with h5py.File(feats_dir / f"{splits['train'][0]}.h5", "r") as f:
        dim = f["features"].shape[-1]
    model = create_model("acmil", in_dim=dim, n_classes=len(names)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(splits["train"]))
    rng = np.random.default_rng(0)
    best, best_state, times = -1.0, None, []
    for _ in range(args.epochs):
        start = time.process_time()
        model.train()
        for i in rng.permutation(len(splits["train"])):
            x, y = bag(splits["train"][i])
            loss = model.compute_loss(model(x), y)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            _ = loss.item()  # the reference logs the loss every step
        model.eval()
        probs, targets, losses = [], [], []
        with torch.no_grad():
            for sid in splits["val"]:
                x, y = bag(sid)
                out = model(x)
                losses.append(float(model.compute_loss(out, y)["loss"]))
                probs.append(torch.softmax(out.logits, -1)[0, 1].item())
                targets.append(int(y))
        # Mann-Whitney AUC of the validation bags: the selection score
        pos = [p for p, t in zip(probs, targets, strict=True) if t == 1]
        neg = [p for p, t in zip(probs, targets, strict=True) if t == 0]
        auc = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / max(1, len(pos) * len(neg))
        if auc > best:
            best, best_state = auc, {k: v.detach().clone() for k, v in model.state_dict().items()}
        times.append(time.process_time() - start)
    Path(os.environ["ACMIL_BENCH_EPOCHS"]).write_text(json.dumps(times))
    torch.save(best_state, Path(args.run) / "plain_best.pt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="small,wsi")
    p.add_argument("--device", default="cpu")
    p.add_argument("--wsi-slides", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2, help="runs of each side (the minimum is kept)")
    p.add_argument("--out", default=str(REPO / "bench_out"))
    p.add_argument(
        "--baseline-src",
        default="",
        help="also time `acmil train` from this source tree, e.g. an earlier commit unpacked with "
        "`git archive COMMIT | tar -x -C DIR` (before/after in one run)",
    )
    p.add_argument("--cohorts", default="", help="folder to keep the generated cohorts in (default: temporary)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--run", default="", help=argparse.SUPPRESS)
    p.add_argument("--features", default="", help=argparse.SUPPRESS)
    p.add_argument("--labels", default="", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "plain":
        worker_plain(args)
        return

    from acmil.synthetic.features import make_cohort

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    root = Path(args.cohorts or tempfile.mkdtemp(prefix="acmil_overhead_"))
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    results: dict[str, dict] = {}
    for size in args.sizes.split(","):
        slides, patches, dim, epochs = SIZES[size]
        if size == "wsi":
            slides = args.wsi_slides
        cohort = root / size
        if not (cohort / "labels.csv").is_file():
            make_cohort(cohort, n_slides=slides, n_patches=patches, dim=dim, seed=0)
        features, labels = str(cohort / "features"), str(cohort / "labels.csv")
        run = cohort / "run"
        acmil_cmd = [
            sys.executable,
            "-m",
            "acmil",
            "train",
            "--data.features_dir",
            features,
            "--data.labels_csv",
            labels,
            "--trainer.accelerator",
            accelerator,
            "--trainer.default_root_dir",
            str(run),
            "--seed_everything",
            "0",
            "--overwrite",
            "--trainer.max_epochs",
            str(epochs),
            "--trainer.callbacks+=epoch_clock.EpochClock",
        ]
        plain_cmd = [sys.executable, __file__, "--worker", "plain", "--run", str(run), "--features", features]
        plain_cmd += ["--labels", labels, "--device", args.device, "--epochs", str(epochs)]
        clock_path = str(REPO / "benchmarks")
        acmil_env = {**env, "PYTHONPATH": clock_path}
        sides = {
            "acmil": (acmil_cmd, acmil_env),
            "plain": (plain_cmd, env),
            "plain_cached": (plain_cmd + ["--cached"], env),
        }
        if args.baseline_src:  # the same command from another source tree (an earlier commit): before/after
            src = str(Path(args.baseline_src).resolve())
            sides["acmil_baseline"] = (acmil_cmd, {**env, "PYTHONPATH": f"{src}:{clock_path}", "ACMIL_BENCH_CWD": src})
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        imports: dict[str, list[float]] = {"torch, torch._dynamo": [], "lightning.pytorch": []}
        for _ in range(args.repeats):  # alternate, so a change in the machine's load hits every side
            for side, (cmd, side_env) in sides.items():
                runs[side].append(_run(cmd, side_env))
            for module in imports:
                imports[module].append(_import_cpu(module, env))
        floor = round(min(imports["lightning.pytorch"]) - min(imports["torch, torch._dynamo"]), 3)
        best = {side: min(r, key=lambda x: x["cpu_s"]) for side, r in runs.items()}
        epoch = {side: min(x["epoch_cpu_s"] for x in r) for side, r in runs.items()}
        ratios = {
            side: {
                base: {
                    "cpu": round(best[side]["cpu_s"] / best[base]["cpu_s"], 3),
                    "cpu_minus_import": round((best[side]["cpu_s"] - floor) / best[base]["cpu_s"], 3),
                    "wall": round(best[side]["wall_s"] / best[base]["wall_s"], 3),
                    "per_epoch_cpu": round(epoch[side] / epoch[base], 3),
                }
                for base in ("plain", "plain_cached")
            }
            for side in sides
            if not side.startswith("plain")
        }
        results[size] = {
            "cohort": {"slides": slides, "instances": patches, "dim": dim, "epochs": epochs},
            "runs": runs,
            "epoch_cpu_s": epoch,
            "import_cpu_s": imports,
            "import_floor_s": floor,
            "ratio": ratios,
        }
        print(f"{size}: import lightning.pytorch costs {floor:.2f} s CPU more than torch + torch._dynamo", flush=True)
        for side, by_base in ratios.items():
            for base, r in by_base.items():
                print(
                    f"{size}, {epochs} epochs, {side}: {best[side]['cpu_s']:.2f} s CPU / {best[side]['wall_s']:.2f} s "
                    f"wall vs {base} {best[base]['cpu_s']:.2f} / {best[base]['wall_s']:.2f}: CPU {r['cpu']}x "
                    f"({r['cpu_minus_import']}x without the import floor), wall {r['wall']}x; per epoch CPU "
                    f"{epoch[side]:.3f} vs {epoch[base]:.3f} s: {r['per_epoch_cpu']}x",
                    flush=True,
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"train_overhead_{args.device.split(':')[0]}.json"
    path.write_text(json.dumps({"device": args.device, "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
