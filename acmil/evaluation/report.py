"""``acmil report RUN_DIR|CV_DIR``: one HTML page with each split's metrics and 95 % bootstrap intervals,
ROC and precision-recall curves with their bands, the confusion matrix and calibration (reliability
diagram, ECE, Brier). Figures go to ``<dir>/evaluation/`` as PNG and SVG and are linked from
``<dir>/report.html`` by relative paths, so the folder can be moved as a whole.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from acmil.atomic import atomic_path, write_json
from acmil.command import CommandParser, command_parser, config_from

from .bootstrap import DEFAULT_RESAMPLES, bootstrap_indices
from .io import PredictionSet, fold_dirs, load_predictions, predictions_file
from .metrics import METRIC_LABELS, METRIC_NAMES
from .summary import summarise

CURVE_RESAMPLES = 200  # the band of a curve is a picture; 200 resamples draw it as well as 1,000


def evaluate_split(pred: PredictionSet, out_dir: Path, prefix: str, n_boot: int, seed: int) -> dict[str, Any]:
    """summarise() of one split plus its four figures; returns the summary with ``figures`` (relative names)."""
    from . import figures
    from .curves import class_curves

    summary = summarise(pred.probs, pred.targets, pred.class_names, pred.case_ids, seed=seed, n_boot=n_boot)
    indices = bootstrap_indices(len(pred.targets), min(n_boot, CURVE_RESAMPLES), seed, pred.case_ids)
    title = f"{prefix} ({len(pred.targets)} slides)"
    made = {}
    for kind, label in (("roc", "ROC"), ("pr", "precision-recall")):
        bands = class_curves(pred.probs, pred.targets, pred.class_names, indices, kind)
        if bands:
            made[kind] = figures.save(
                figures.curve_figure({"model": bands}, kind, f"{label}: {title}"), out_dir / f"{prefix}_{kind}"
            )
    counts = summary["confusion_matrix"]["counts"]
    made["confusion"] = figures.save(
        figures.confusion_figure(counts, pred.class_names, f"confusion: {title}"), out_dir / f"{prefix}_confusion"
    )
    cal = summary["calibration"]
    made["reliability"] = figures.save(
        figures.reliability_figure(cal["reliability"], cal["ece"], cal["brier"], f"reliability: {title}"),
        out_dir / f"{prefix}_reliability",
    )
    summary["figures"] = {k: [p.name for p in v] for k, v in made.items()}
    return summary


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _split_html(name: str, s: dict[str, Any], fig_dir: str) -> str:
    ci, cal = s["ci"], s["calibration"]
    level = int(ci["level"] * 100)
    rows = [
        [
            METRIC_LABELS[m],
            _f(ci["metrics"][m]["value"]),
            f"[{_f(ci['metrics'][m]['low'])}, {_f(ci['metrics'][m]['high'])}]",
        ]
        for m in METRIC_NAMES
    ]
    cal_rows = [
        ["expected calibration error", _f(cal["ece"], 4)],
        ["Brier score", _f(cal["brier"], 4)],
        ["negative log-likelihood", _f(cal["nll"], 4)],
    ]
    if "temperature" in cal:
        cal_rows += [
            [
                f"after temperature scaling (T = {cal['temperature']:.3f}): ECE / Brier",
                f"{_f(cal['temperature_scaled']['ece'], 4)} / {_f(cal['temperature_scaled']['brier'], 4)}",
            ]
        ]
    images = "".join(
        f'<figure><img src="{html.escape(fig_dir)}/{html.escape(names[0])}" alt="{html.escape(kind)}">'
        f'<figcaption>{html.escape(kind)} (<a href="{html.escape(fig_dir)}/{html.escape(names[-1])}">SVG'
        "</a>)</figcaption></figure>"
        for kind, names in s["figures"].items()
    )
    return (
        f"<h2>{html.escape(name)}</h2><p>{ci['n_slides']} slides, {ci['n_cases']} cases; {level} % percentile "
        f"bootstrap intervals over {ci['n_boot']} resamples of {ci['unit']}s (seed {ci['seed']}).</p>"
        + _table(["metric", "value", f"{level} % CI"], rows)
        + "<h3>Calibration</h3>"
        + _table(["measure", "value"], cal_rows)
        + f'<div class="figs">{images}</div>'
    )


def _with_ci(split: dict[str, Any], name: str) -> str:
    """'value [low, high]' from a metrics.json split (the CI when ``acmil.evaluation.summarise`` added one)."""
    ci = ((split.get("ci") or {}).get("metrics") or {}).get(name)
    value = _f(split.get(name))
    return f"{value} [{_f(ci['low'])}, {_f(ci['high'])}]" if ci else value


def _folds_html(cv_summary: dict[str, Any]) -> str:
    rows = [
        [str(f["fold"])] + [_with_ci(f.get("test") or {}, m) for m in METRIC_NAMES] for f in cv_summary.get("folds", [])
    ]
    means = cv_summary.get("metrics", {})
    rows.append(
        ["mean ± std"]
        + [f"{_f(means[m]['mean'])} ± {_f(means[m]['std'])}" if m in means else "n/a" for m in METRIC_NAMES]
    )
    header = ["fold"] + [METRIC_LABELS[m] for m in METRIC_NAMES]
    return "<h2>Folds (test split of each fold, with 95 % bootstrap CIs)</h2>" + _table(header, rows)


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f3f3f3}.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}"
    "figure img{max-height:360px}figcaption{font-size:.85em;color:#555}"
)


@dataclass(kw_only=True)
class ReportConfig:
    """``acmil report``'s options (a config file's keys are these names)."""

    run: str  # an `acmil train`/`acmil test` folder or an `acmil cv` folder
    labels_csv: str | None = None
    n_boot: int = DEFAULT_RESAMPLES
    seed: int = 0
    out: str | None = None  # default RUN/report.html


@dataclass(kw_only=True)
class ReportResult:
    """What ``acmil report`` wrote and computed.

    Attributes:
        html: the report page.
        evaluation_json: ``<run>/evaluation/evaluation.json``, the summaries below.
        summaries: per split (``test``, ``val``, ``out-of-fold``, ``all``): metrics with CIs, calibration,
            confusion matrix and the figure names.
        paths: every file written (figures, evaluation.json, the page last).
    """

    html: Path
    evaluation_json: Path
    summaries: dict[str, dict[str, Any]]
    paths: list[Path] = field(default_factory=list)


def run_report(config: ReportConfig) -> ReportResult:
    """Evaluate every labelled split of a run (or the pooled out-of-fold predictions of a cv directory)."""
    root = Path(config.run)
    n_boot, seed = config.n_boot, config.seed
    labels_csv = Path(config.labels_csv) if config.labels_csv else None
    is_cv = (root / "oof_predictions.csv").is_file()
    csv_path = predictions_file(root)
    fig_dir = root / "evaluation"
    if is_cv:
        splits = ["out-of-fold"]
    else:
        with csv_path.open() as fh:
            header = fh.readline().strip().split(",")
            splits = (
                list(dict.fromkeys(line.split(",")[header.index("split")] for line in fh))
                if "split" in header
                else ["all"]
            )
    sections, summaries = [], {}
    for split in splits:
        pred = load_predictions(root, "all" if split in ("out-of-fold", "all") else split, labels_csv)
        summaries[split] = evaluate_split(pred, fig_dir, split.replace(" ", "_"), n_boot, seed)
        sections.append(
            _split_html(
                f"{split} split"
                if split not in ("out-of-fold", "all")
                else ("pooled out-of-fold predictions" if is_cv else "all slides"),
                summaries[split],
                fig_dir.name,
            )
        )
    if is_cv and (root / "cv_summary.json").is_file():
        sections.insert(0, _folds_html(json.loads((root / "cv_summary.json").read_text())))
    calibrations = [
        p for p in [root / "calibration.json", *(f / "calibration.json" for f in fold_dirs(root))] if p.is_file()
    ]
    for path in calibrations:
        rec = json.loads(path.read_text())
        sections.append(
            f"<p>{html.escape(str(path.parent.name))}: temperature scaling fitted on the "
            f"{html.escape(rec['split'])} split, T = {rec['temperature']:.3f} (validation ECE "
            f"{_f(rec['before']['ece'], 4)} → {_f(rec['after']['ece'], 4)}), applied by "
            "<code>acmil predict</code> and the service.</p>"
        )
    figures = [fig_dir / name for s in summaries.values() for names in s["figures"].values() for name in names]
    evaluation_json = write_json(fig_dir / "evaluation.json", summaries)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ACMIL evaluation: {html.escape(root.name)}"
        f"</title><style>{STYLE}</style></head><body><h1>Evaluation of {html.escape(str(root))}</h1>"
        f"<p>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by <code>acmil report</code> from "
        f"{html.escape(csv_path.name)}.</p>" + "".join(sections) + "</body></html>\n"
    )
    target = Path(config.out or root / "report.html")
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return ReportResult(
        html=target,
        evaluation_json=evaluation_json,
        summaries=summaries,
        paths=[*figures, evaluation_json, target],
    )


def build_parser() -> CommandParser:
    p = command_parser("acmil report", __doc__.split("\n\n")[0])
    p.add_argument("run", help="an `acmil train`/`acmil test` folder (predictions.csv) or an `acmil cv` folder")
    p.add_argument("--labels-csv", default=None, help="labels CSV with case_id (default: the run's config.yaml)")
    p.add_argument("--n-boot", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    return p


def main(argv: list[str] | None = None) -> int:
    result = run_report(config_from(build_parser().parse_args(argv), ReportConfig))
    print(f"wrote {result.html}")
    return 0
