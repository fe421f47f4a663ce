"""Which heatmap scaling shows a pathologist where the model looked? Measured on a demo run.

For each scaling (log, rank, min-max) and a cut-off (default 0.4: scaled scores below are not drawn), over the demo's
slides with their planted tumour masks:

- tumour slides: the share of tumour tiles drawn (wanted: ~all) and of the other tiles drawn (wanted: few);
- normal slides: the share of tiles drawn.

Usage: python benchmarks/heatmap_scaling.py DEMO_OUT [--arch acmil|abmil] [--cutoff 0.5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from acmil.analysis._common import run_model
from acmil.analysis.masks import tile_labels
from acmil.checkpoint import load_model
from acmil.features import list_feature_files, read_features
from acmil.heatmap import normalise_scores


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("demo_out", type=Path)
    p.add_argument("--arch", default="acmil")
    p.add_argument("--cutoff", type=float, default=0.4)
    args = p.parse_args()
    model = load_model(args.demo_out / "runs" / args.arch / "checkpoints" / "best.ckpt").model
    masks = args.demo_out / "cohort" / "masks"
    keys = ("tumour_drawn", "other_drawn", "normal_drawn", "tumour_mean", "other_mean")
    out: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in ("log", "rank", "minmax")}
    for path in list_feature_files(args.demo_out / "preprocess" / "features").values():
        slide = read_features(path)
        labels = tile_labels(masks, slide, missing_is_negative=True)
        scores = run_model(model, slide).mean_attention
        for method, acc in out.items():
            v = normalise_scores(scores, method)
            drawn = v >= args.cutoff
            if labels.any():
                acc["tumour_drawn"].append(float(drawn[labels].mean()))
                acc["other_drawn"].append(float(drawn[~labels].mean()))
                acc["tumour_mean"].append(float(v[labels].mean()))
                acc["other_mean"].append(float(v[~labels].mean()))
            else:
                acc["normal_drawn"].append(float(drawn.mean()))
    summary = {m: {k: round(float(np.mean(x)), 3) if x else None for k, x in acc.items()} for m, acc in out.items()}
    print(json.dumps({"arch": args.arch, "cutoff": args.cutoff, **summary}, indent=2))


if __name__ == "__main__":
    main()
