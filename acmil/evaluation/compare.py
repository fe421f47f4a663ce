"""``acmil compare RUN_A RUN_B``: two models on the same slides. AUC by the paired DeLong test (per class
one-vs-rest when there are more than two classes), every metric by a paired bootstrap that draws the same
slides (or cases) for both models; a table on stdout, ``compare.json`` and a figure.

The paired bootstrap's two-sided p-value is 2 * min(P(d* <= 0), P(d* >= 0)) over the resampled differences
d* (capped at 1): how often the resampled difference falls on the other side of zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.atomic import write_json
from acmil.command import CommandParser, as_list, command_parser, config_from

from .bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_indices, bootstrap_metrics, percentile_interval
from .delong import delong_test
from .io import PredictionSet, load_predictions
from .metrics import METRIC_LABELS, METRIC_NAMES, point_metrics
from .summary import json_safe


def align(a: PredictionSet, b: PredictionSet) -> tuple[PredictionSet, PredictionSet, dict[str, int]]:
    """Both sets restricted to their shared slides (in A's order) and B's columns in A's class order; refuses
    different labels or classes."""
    if a.class_names != b.class_names and sorted(a.class_names) == sorted(b.class_names):
        order = [b.class_names.index(c) for c in a.class_names]
        remap = np.argsort(order)  # B's class index -> A's
        b = PredictionSet(
            b.source, b.split, b.slide_ids, remap[b.targets], b.probs[:, order], a.class_names, b.case_ids
        )
    if a.class_names != b.class_names:
        raise ValueError(f"{a.source} has classes {a.class_names}, {b.source} has {b.class_names}")
    in_b, a_all = set(b.slide_ids), set(a.slide_ids)
    shared = [s for s in a.slide_ids if s in in_b]
    if len(shared) < 2:
        raise ValueError(
            f"{a.source} and {b.source} share {len(shared)} slide(s) in split {a.split!r}: "
            "compare models on the same slides"
        )
    a, b = a.subset(shared), b.subset(shared)
    differ = [s for s, ta, tb in zip(shared, a.targets, b.targets, strict=True) if ta != tb]
    if differ:
        raise ValueError(f"the two runs label {len(differ)} shared slide(s) differently, e.g. {differ[:5]}")
    counts = {"shared": len(shared), "only_a": len(a_all - in_b), "only_b": len(in_b - a_all)}
    return a, b, counts


def paired_bootstrap(a: PredictionSet, b: PredictionSet, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    """Per metric: values of A and B, the difference A - B, its percentile interval and p-value."""
    groups = a.case_ids or b.case_ids
    indices = bootstrap_indices(len(a.targets), n_boot, seed, groups)
    va, vb = point_metrics(a.probs, a.targets), point_metrics(b.probs, b.targets)
    da, db = bootstrap_metrics(a.probs, a.targets, indices), bootstrap_metrics(b.probs, b.targets, indices)
    out = {}
    for name in METRIC_NAMES:
        diff = da[name] - db[name]
        diff = diff[np.isfinite(diff)]
        low, high = percentile_interval(diff, level)
        p = min(1.0, 2.0 * min(np.mean(diff <= 0), np.mean(diff >= 0))) if diff.size else float("nan")
        out[name] = {
            "a": va[name],
            "b": vb[name],
            "difference": va[name] - vb[name],
            "ci_low": low,
            "ci_high": high,
            "p_value": float(p),
            "n_valid": int(diff.size),
        }
    return out


def compare(
    a: PredictionSet,
    b: PredictionSet,
    names: tuple[str, str] = ("A", "B"),
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """The comparison as a JSON-ready dict whose ``rows`` make the table and the figure."""
    a, b, counts = align(a, b)
    rows = []
    classes = [1] if len(a.class_names) == 2 else range(len(a.class_names))
    delong = {}
    for c in classes:
        positive = a.targets == c
        label = "AUROC" if len(a.class_names) == 2 else f"AUROC {a.class_names[c]} vs rest"
        try:
            res = delong_test(a.probs[:, c], b.probs[:, c], positive, level)
        except ValueError as err:  # too few slides of a class: say so in the table instead of failing
            delong[a.class_names[c]] = {"error": str(err)}
            continue
        delong[a.class_names[c]] = res.as_dict()
        rows.append(
            {
                "metric": label,
                "test": "DeLong",
                "a": res.auc_a,
                "b": res.auc_b,
                "difference": res.difference,
                "ci_low": res.ci_low,
                "ci_high": res.ci_high,
                "p_value": res.p_value,
            }
        )
    boot = paired_bootstrap(a, b, n_boot, seed, level)
    for name in METRIC_NAMES:
        if name == "auc" and len(a.class_names) == 2:
            continue  # DeLong covers the binary AUC; the bootstrap one is still in "paired_bootstrap"
        rows.append(
            {
                "metric": METRIC_LABELS[name],
                "test": "paired bootstrap",
                **{k: boot[name][k] for k in ("a", "b", "difference", "ci_low", "ci_high", "p_value")},
            }
        )
    unit = "case" if (a.case_ids or b.case_ids) else "slide"
    return json_safe(
        {
            "names": list(names),
            "sources": [str(a.source), str(b.source)],
            "split": a.split,
            "slides": counts,
            "class_names": a.class_names,
            "level": level,
            "n_boot": n_boot,
            "seed": seed,
            "resampling_unit": unit,
            "delong": delong,
            "paired_bootstrap": boot,
            "rows": rows,
        }
    )


def format_table(result: dict[str, Any]) -> str:
    name_a, name_b = result["names"]
    header = ["metric", "test", name_a, name_b, f"{name_a} - {name_b}", f"{int(result['level'] * 100)} % CI", "p"]

    def f(v: Any, fmt: str = ".3f") -> str:
        return "n/a" if v is None else format(v, fmt)

    body = [
        [
            r["metric"],
            r["test"],
            f(r["a"]),
            f(r["b"]),
            f(r["difference"], "+.3f"),
            f"[{f(r['ci_low'], '+.3f')}, {f(r['ci_high'], '+.3f')}]",
            f(r["p_value"], ".3g"),
        ]
        for r in result["rows"]
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]]
    s = result["slides"]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        f"{s['shared']} shared slides (split {result['split']!r}), bootstrap {result['n_boot']} resamples "
        f"of {result['resampling_unit']}s, seed {result['seed']}"
    )
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], a: PredictionSet, b: PredictionSet, out: Path) -> list[Path]:
    """compare.json, compare.png/.svg (forest plot) and compare_roc.png/.svg (both models' ROC bands)."""
    from . import figures
    from .curves import class_curves

    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "compare.json", result)]
    name_a, name_b = result["names"]
    title = f"{name_a} vs {name_b} on {result['slides']['shared']} shared slides"
    paths += figures.save(figures.comparison_figure(result["rows"], name_a, name_b, title), out / "compare")
    a, b, _ = align(a, b)
    indices = bootstrap_indices(len(a.targets), min(result["n_boot"], 200), result["seed"], a.case_ids)
    bands = {n: class_curves(p.probs, p.targets, p.class_names, indices, "roc") for n, p in ((name_a, a), (name_b, b))}
    paths += figures.save(figures.curve_figure(bands, "roc", f"ROC: {title}"), out / "compare_roc")
    return paths


@dataclass(kw_only=True)
class CompareConfig:
    """``acmil compare``'s options (a config file's keys are these names)."""

    run_a: str
    run_b: str
    names: list[str] | None = None  # display names of A and B (default: their folder names)
    split: str = "test"
    labels_csv: str | None = None
    n_boot: int = DEFAULT_RESAMPLES
    seed: int = 0
    out: str = "compare"

    def __post_init__(self) -> None:  # a config file may give one value without a list
        self.names = as_list(self.names)


@dataclass(kw_only=True)
class CompareResult:
    """What ``acmil compare`` computed and wrote.

    Attributes:
        comparison: the content of ``compare.json`` (``delong``, ``paired_bootstrap``, ``rows``, ...).
        table: the table printed on stdout.
        paths: the files written (``compare.json`` first, then the figures).
    """

    comparison: dict[str, Any]
    table: str
    paths: list[Path] = field(default_factory=list)


def run_compare(config: CompareConfig) -> CompareResult:
    """Load both runs' predictions on ``config.split``, compare them and write ``config.out``."""
    a = load_predictions(config.run_a, config.split, config.labels_csv)
    b = load_predictions(config.run_b, config.split, config.labels_csv)
    names = tuple(config.names or (Path(config.run_a).resolve().name, Path(config.run_b).resolve().name))
    if len(names) != 2:
        raise ValueError(f"names: two display names are needed (A and B), got {list(names)}")
    comparison = compare(a, b, names, n_boot=config.n_boot, seed=config.seed)
    paths = write_outputs(comparison, a, b, Path(config.out))
    return CompareResult(comparison=comparison, table=format_table(comparison), paths=paths)


def build_parser() -> CommandParser:
    p = command_parser("acmil compare", __doc__.split("\n\n")[0])
    p.add_argument("run_a", help="run directory (predictions.csv), cv directory (oof_predictions.csv) or a CSV")
    p.add_argument("run_b", help="the other model, on the same slides")
    p.add_argument("--names", nargs=2, default=None, metavar=("A", "B"), help="display names (default: folder names)")
    p.add_argument("--split", default="test", help="split to compare (default test; a cv dir: out-of-fold)")
    p.add_argument("--labels-csv", default=None, help="labels CSV with case_id, to resample cases")
    p.add_argument("--n-boot", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="compare", help="folder for compare.json and the figures (default ./compare)")
    return p


def main(argv: list[str] | None = None) -> int:
    result = run_compare(config_from(build_parser().parse_args(argv), CompareConfig))
    print(result.table)
    for path in result.paths:
        print(f"wrote {path}")
    return 0
