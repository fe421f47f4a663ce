"""The demo's report: the same blocks rendered as Markdown (``report.md``) and HTML (``report.html``).

Figures are linked by paths relative to the report, so the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from acmil.atomic import atomic_path
from acmil.heatmap import DEFAULT_CMAP, scaling_label

# ("h1"|"h2"|"p"|"code", text) | ("table", header, rows) | ("images", [(path, caption)]) (a row of thumbnails)
# | ("figure", path, caption) (one figure across the page, its full size a click away)
Block = tuple

LOCALISATION_TARGET = 0.95


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _concentration_sentence(stats: dict[str, Any]) -> str:
    """Which model's mean attention is more concentrated here, in words, from the top-10 figures."""
    top10 = {name: branches["mean"]["top10"] for name, branches in stats.items() if "mean" in branches}
    if len(top10) < 2:
        return ""
    (most, a), (least, b) = sorted(top10.items(), key=lambda kv: -kv[1])[:2]
    return (
        f"Here {most}'s mean attention is the more concentrated (top-10 tiles hold {a:.2f} of it, against "
        f"{b:.2f} for {least}); with planted tumour regions of a few tiles, concentrating on them is what a "
        "good model should do, so read this together with the localisation AUC above."
    )


def _p_value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _comparison_blocks(result: dict[str, Any] | None) -> list[Block]:
    """ACMIL against ABMIL on the same slides (:func:`acmil.demo.compare_runs`): table and figures."""
    if not result:
        return []
    head: list[Block] = [("h2", "ACMIL against ABMIL on the same slides")]
    if "error" in result:
        return head + [("p", f"The two models could not be compared: {result['error']}")]
    n, unit = result["slides"]["shared"], result["resampling_unit"]
    level = int(round(result["level"] * 100))
    errors = [f"{c}: {d['error']}" for c, d in result.get("delong", {}).items() if "error" in d]
    return head + [
        (
            "p",
            f"Both models on the same {n} held-out slides (validation + test: the demo keeps the final epoch, so "
            f"no slide chose a checkpoint). AUROC by the paired DeLong test, the other metrics by a paired "
            f"bootstrap ({result['n_boot']} resamples of {unit}s, seed {result['seed']}) drawing the same "
            f"{unit}s for both; {level} % intervals of the difference ACMIL - ABMIL. With this few slides the "
            "intervals are wide: a demonstration of the test, not evidence either way."
            + (f" DeLong not computed ({'; '.join(errors)})." if errors else ""),
        ),
        (
            "table",
            ["metric", "test", "ACMIL", "ABMIL", "ACMIL - ABMIL", f"{level} % CI", "p"],
            [
                [
                    r["metric"],
                    r["test"],
                    _f(r["a"]),
                    _f(r["b"]),
                    _f(r["difference"]),
                    f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                    _p_value(r["p_value"]),
                ]
                for r in result["rows"]
            ],
        ),
        ("figure", "analysis/compare/compare.png", "ACMIL - ABMIL per metric with its interval"),
        ("figure", "analysis/compare/compare_roc.png", "ROC of both models on the same slides (bootstrap bands)"),
    ]


def build_blocks(out: Path, s: dict[str, Any]) -> list[Block]:
    """The report's content from the demo summary ``s`` (see :func:`acmil.demo.run_demo`)."""
    size, loc, stats, metrics = s["size"], s["localisation"], s["attention_stats"], s["metrics"]
    acmil_auc = loc["acmil"]["mean_auc"]
    verdict = "meets" if acmil_auc is not None and acmil_auc >= LOCALISATION_TARGET else "does NOT meet"
    blocks: list[Block] = [
        ("h1", "ACMIL demo report"),
        (
            "p",
            f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `acmil demo`: {size['n_slides']} "
            f"synthetic slides ({size['width']} x {size['height']} px at 0.5 µm/px, half with planted tumour "
            f"regions), {s['n_tiles']} tissue tiles, seed {s['seed']}. Encoder `{s['encoder']}`: "
            f"{s['encoder_weights_note']}. Splits: {len(s['splits']['train'])} train / "
            f"{len(s['splits']['val'])} val / {len(s['splits']['test'])} test slides.",
        ),
        ("h2", "Slide classification"),
        (
            "table",
            ["model", "split", "AUC", "balanced accuracy", "macro F1", "accuracy"],
            [
                [
                    arch.upper(),
                    split,
                    _f(m[split].get("auc")),
                    _f(m[split].get("balanced_accuracy")),
                    _f(m[split].get("f1_macro")),
                    _f(m[split].get("accuracy")),
                ]
                for arch, m in metrics.items()
                for split in ("val", "test")
                if split in m
            ],
        ),
        *_comparison_blocks(s.get("compare")),
        ("h2", "Does attention find the tumour?"),
        (
            "p",
            f"Tile-level ROC AUC of the attention (mean over branches) against the planted tumour masks, per "
            f"tumour slide then averaged (normal slides have no tumour tiles and no AUC). ACMIL "
            f"{_f(acmil_auc)} {verdict} the target of {LOCALISATION_TARGET}.",
        ),
        (
            "table",
            ["model", "mean AUC (all tumour slides)", "held-out slides", "pooled", "worst slide", "slides"],
            [
                [
                    arch.upper(),
                    _f(r["mean_auc"]),
                    _f(r.get("held_out_mean_auc")),
                    _f(r["pooled_auc"]),
                    _f(r["min_auc"]),
                    str(r["n_slides"]),
                ]
                for arch, r in loc.items()
            ],
        ),
        ("h2", "Attention concentration"),
        (
            "p",
            "Cumulative attention held by the top-K tiles, mean over slides: the ACMIL paper's measure. The paper "
            "finds that ABMIL over-concentrates attention on a few tiles and that ACMIL's branches and masking "
            "spread it. " + _concentration_sentence(stats),
        ),
        (
            "table",
            ["model", "branch", "top-1", "top-5", "top-10", "top-1 %", "top-10 %"],
            [
                [name, b, _f(v["top1"]), _f(v["top5"]), _f(v["top10"]), _f(v["top1pct"]), _f(v["top10pct"])]
                for name, branches in stats.items()
                for b, v in branches.items()
            ],
        ),
        ("figure", "analysis/attention_stats/attention_curve.png", "cumulative attention against top tiles"),
        ("h2", "Heatmaps"),
        (
            "p",
            "Held-out slides: the ground-truth mask, then each model's mean attention over the slide thumbnail, "
            "then ACMIL's branches, drawn exactly as the viewer draws them by default. Colour scale "
            f"({s.get('heatmap_cmap', DEFAULT_CMAP)}, dark = low, bright yellow = high): "
            f"{s.get('heatmap_scaling') or scaling_label()}.",
        ),
    ]
    for sid in s["heatmap_slides"]:
        images = [(f"cohort/masks/{sid}.png", f"{sid}: tumour mask")]
        for arch in ("acmil", "abmil"):
            images.append((f"analysis/heatmaps/{arch}/{sid}_mean.png", f"{arch.upper()} mean attention"))
        branch_files = sorted((out / "analysis" / "heatmaps" / "acmil").glob(f"{sid}_branch*.png"))
        images += [(os.path.relpath(p, out), f"ACMIL {p.stem.rsplit('_', 1)[1]}") for p in branch_files]
        blocks.append(("images", images))
    blocks += [
        ("h2", "UMAP of ACMIL's instance features"),
        (
            "p",
            f"{s['umap']['n_points']} of {s['umap']['n_tiles_total']} tiles (fixed-seed sub-sample), coloured by "
            "attention rank within the slide, by the branch attending most, and by the tumour mask.",
        ),
        ("figure", "analysis/umap/umap.png", "UMAP of ACMIL's instance features"),
        ("h2", "Open the viewer"),
        ("code", s["serve_command"]),
        (
            "p",
            "then browse http://127.0.0.1:8000/ (the viewer's OpenSeadragon files are fetched once from the npm "
            "registry, pinned by package-lock.json; offline, `acmil serve` says what to run).",
        ),
        ("h2", "Time per stage"),
        ("table", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in s["stage_seconds"].items()]),
    ]
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "code":
            lines += ["```", block[1], "```", ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        elif kind == "images":
            lines += [" ".join(f"![{cap}]({path})" for path, cap in block[1]), ""]
        elif kind == "figure":
            lines += [f"[![{block[2]}]({block[1]})]({block[1]})", ""]
    return "\n".join(lines)


def to_html(blocks: list[Block]) -> str:
    e = html.escape
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            text = e(block[1])
            parts = text.split("`")  # inline code: text between backticks
            text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
            body.append(f"<{kind}>{text}</{kind}>")
        elif kind == "code":
            body.append(f"<pre><code>{e(block[1])}</code></pre>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "images":
            figs = "".join(
                f'<figure><a href="{e(p)}"><img src="{e(p)}" alt="{e(c)}"></a><figcaption>{e(c)}</figcaption></figure>'
                for p, c in block[1]
            )
            body.append(f'<div class="row">{figs}</div>')
        elif kind == "figure":
            path, caption = e(block[1]), e(block[2])
            body.append(
                f'<figure class="wide"><a href="{path}" title="open at full size"><img src="{path}" '
                f'alt="{caption}"></a><figcaption>{caption} (click to enlarge)</figcaption></figure>'
            )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
        "text-align:right}th{background:#f4f4f4}td:first-child,td:nth-child(2){text-align:left}"
        ".row{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}img{max-width:360px;max-height:360px}"
        "figure.wide{margin:1em 0}figure.wide img{width:100%;max-width:1100px;max-height:none}"
        "figcaption{font-size:0.85em;color:#555}pre{background:#f4f4f4;padding:0.8em;overflow-x:auto}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>ACMIL demo report</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(out: str | os.PathLike, summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out`` atomically (a reader never sees half a page);
    returns their paths."""
    out = Path(out)
    blocks = build_blocks(out, summary)
    md, page = out / "report.md", out / "report.html"
    for target, text in ((md, to_markdown(blocks)), (page, to_html(blocks))):
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return md, page
