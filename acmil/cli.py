"""The ``acmil`` command. Each subcommand's module is imported only when that subcommand runs, so
``acmil --help`` answers at once although training pulls in Lightning and the service FastAPI."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import NoReturn

# name -> (module, function, one-line help). The function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("acmil.training.cli", "train_main", "train a MIL model on feature files into a run directory"),
    "test": ("acmil.training.cli", "test_main", "evaluate a checkpoint on labelled feature files"),
    "cv": ("acmil.training.cv", "main", "K-fold cross-validation, stratified and grouped by case"),
    "predict": ("acmil.training.predict", "main", "predict slides from feature files into a CSV"),
    "compare": ("acmil.evaluation.compare", "main", "two models on the same slides: DeLong and paired bootstrap"),
    "report": ("acmil.evaluation.report", "main", "HTML report: metrics with 95 % CIs, curves, calibration"),
    "calibrate": ("acmil.evaluation.temperature", "main", "fit temperature scaling on the validation split"),
    "import-checkpoint": ("acmil.reference", "main", "convert a reference ACMIL (GA or MHA) .pth into a checkpoint"),
    "preprocess": ("acmil.preprocessing.cli", "main", "slides -> tissue -> tiles -> features (.h5)"),
    "weights": ("acmil.preprocessing.encoders.cli", "main", "list / import / fetch / verify encoder weights (offline)"),
    "convert": ("acmil.preprocessing.convert", "main", "convert CLAM / TRIDENT / ACMIL feature files to format 1"),
    "serve": ("acmil.service.cli", "main", "serve predictions, heatmaps and the slide viewer"),
    "worker": ("acmil.service.jobs_cli", "worker_main", "run slide jobs from a Redis queue (acmil serve --queue)"),
    "heatmap": ("acmil.analysis.heatmaps", "main", "write attention heatmap PNGs for a cohort"),
    "umap": ("acmil.analysis.umap_plot", "main", "UMAP of instance embeddings coloured by attention"),
    "attention-stats": ("acmil.analysis.attention_stats", "main", "attention concentration per slide and branch"),
    "localisation": ("acmil.analysis.localisation", "main", "tile-level AUC of attention against tumour masks"),
    "demo": ("acmil.demo", "main", "synthetic cohort -> features -> ACMIL & ABMIL -> report, in minutes"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: acmil COMMAND [options]   (acmil COMMAND --help for a command's options)",
        "",
        "Whole-slide image classification with ACMIL.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {info[2]}" for name, info in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from acmil import __version__

        print(f"acmil {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"acmil: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    try:
        code = getattr(importlib.import_module(module), function)(rest)
    except KeyboardInterrupt:
        print("acmil: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse / LightningCLI exit paths
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one clear line on stderr
        if os.environ.get("ACMIL_DEBUG"):
            raise
        print(f"acmil {name}: error: {exc}", file=sys.stderr)
        return 1
    return int(code or 0)


def run() -> NoReturn:
    """The console script and ``python -m acmil``: :func:`main`, then the process ends.

    ``gc.freeze()`` first: the interpreter's collections at shutdown would otherwise walk every object that
    torch and Lightning made at import, about a second of CPU on every command (measured in
    ``benchmarks/bench_train_overhead.py``). Frozen objects are still freed by reference counting; only the
    last cycle collection, whose memory the exit returns anyway, is skipped. Not in :func:`main`, which tests
    and scripts call in a process that goes on.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
