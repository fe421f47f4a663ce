"""``acmil train`` and ``acmil test``: the entry points, light at import.

Lightning takes seconds to import, so this module imports neither it nor torch: ``--help`` answers at
once from the summaries below, and the LightningCLI (``acmil.training.lightning_run``) is imported only
when a command runs. ``--help-all`` prints the full LightningCLI option list.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .rundir import RunOptions, split_own_flags

if TYPE_CHECKING:  # numpy and Lightning are imported only when a command runs
    from .results import TrainResult

TRAIN_DESCRIPTION = """\
Train a MIL model (ACMIL, ABMIL, mean or max pooling) on per-slide feature files and a labels CSV. The
cohort is checked first (every problem listed at once), split into train / validation / test (stratified
by label, grouped by case_id, unless the CSV has a split column), and the checkpoint with the best
validation macro-F1 + macro-AUC is kept. The run directory then holds checkpoints/best.ckpt and last.ckpt,
metrics.json, predictions.csv, splits.json, config.yaml (replays the run), logs/ (CSV and TensorBoard)
and train.log (Lightning's full log); the terminal shows progress and the final metrics.

example:
  acmil train --config acmil --data.features_dir features --data.labels_csv labels.csv \\
      --trainer.max_epochs 50 --trainer.default_root_dir runs/acmil --seed_everything 1"""

TRAIN_EPILOG = """\
Every LightningCLI option works too (--trainer.*, --model.*, --data.*, --optimizer ...):
  acmil train --help-all         the full option list (about 500 lines)
  acmil train --print_config     the resolved config as YAML (add your options first)"""

TEST_DESCRIPTION = """\
Evaluate a trained checkpoint on labelled feature files: writes metrics.json and predictions.csv into
--out. The split is the run's own test split when --config RUN/config.yaml or --data.splits_file
RUN/splits.json is given (or the CSV has a split column), else every labelled slide.

example:
  acmil test --checkpoint runs/acmil/checkpoints/best.ckpt --config runs/acmil/config.yaml --out runs/acmil/test"""


def _train_summary() -> argparse.ArgumentParser:
    """The options a user changes most, for ``--help`` (parsing is LightningCLI's; a test keeps them in sync)."""
    p = argparse.ArgumentParser(
        prog="acmil train",
        description=TRAIN_DESCRIPTION,
        epilog=TRAIN_EPILOG,
        usage="acmil train [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        allow_abbrev=False,
    )
    main = p.add_argument_group("most used")
    main.add_argument("--data.features_dir", metavar="DIR", help="folder of <slide_id>.h5 feature files (required)")
    main.add_argument(
        "--data.labels_csv",
        metavar="FILE",
        help="CSV with slide_id, label and optional split, case_id columns (required)",
    )
    main.add_argument("--trainer.max_epochs", metavar="N", help="epochs (default 100)")
    main.add_argument(
        "--config",
        metavar="FILE",
        help="model config: a file, or a shipped one by name: acmil, abmil, mean, max (repeatable; "
        "later ones and later options win)",
    )
    main.add_argument("--seed_everything", metavar="S", help="seed of the split, initialisation and masking (0)")
    main.add_argument("--trainer.devices", metavar="N", help="devices (default 1; DDP: 2 with --trainer.strategy ddp)")
    main.add_argument("--trainer.accelerator", metavar="A", help="auto (default), cpu, gpu or mps")
    main.add_argument("--trainer.default_root_dir", metavar="RUN", help="run directory (default runs/train)")
    more = p.add_argument_group("often changed")
    more.add_argument("--model.lr", metavar="LR", help="AdamW learning rate (default 1e-4)")
    more.add_argument("--data.batch_size", metavar="B", help="bags per step (default 1; >1 pads bags)")
    more.add_argument("--data.val_fraction", metavar="F", help="share of cases for validation (default 0.2)")
    more.add_argument("--data.test_fraction", metavar="F", help="share of cases for test (default 0.2)")
    more.add_argument(
        "--checkpoint.monitor",
        metavar="M",
        help="what selects best.ckpt (default val/selection, with --checkpoint.mode max); null: the last epoch",
    )
    own = p.add_argument_group("run directory and output")
    own.add_argument("--overwrite", action="store_true", help="replace the run already in the run directory")
    own.add_argument(
        "--resume", action="store_true", help="continue the run in the run directory from its checkpoints/last.ckpt"
    )
    own.add_argument("--verbose", action="store_true", help="show Lightning's messages too (always in train.log)")
    own.add_argument("-h", "--help", action="store_true", help="this summary")
    own.add_argument("--help-all", action="store_true", help="every LightningCLI option")
    return p


def _test_summary() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acmil test",
        description=TEST_DESCRIPTION,
        add_help=False,
        usage="acmil test --checkpoint CKPT --out DIR [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="acmil test --help-all lists every option (all --data.* ones).",
    )
    p.add_argument("--checkpoint", metavar="CKPT", help="a best.ckpt, or an imported checkpoint (required)")
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json and predictions.csv (required)")
    p.add_argument("--config", metavar="FILE", help="a run's config.yaml: its data paths and split seed")
    p.add_argument("--data.features_dir", metavar="DIR", help="folder of <slide_id>.h5 feature files")
    p.add_argument("--data.labels_csv", metavar="FILE", help="labels CSV (slide_id, label, ...)")
    p.add_argument("--data.splits_file", metavar="FILE", help="a run's splits.json: evaluate its test split")
    p.add_argument("--split", metavar="S", help="auto (default), train, val, test or all")
    p.add_argument("--device", metavar="D", help="torch device, e.g. cpu (default) or cuda")
    p.add_argument("-h", "--help", action="store_true", help="this summary")
    p.add_argument("--help-all", action="store_true", help="every option")
    return p


def _wants(argv: list[str], *flags: str) -> bool:
    return any(a in flags for a in argv)


def run_train(args: list[str] | dict[str, Any], options: RunOptions | None = None) -> TrainResult | None:
    """Fit, select, evaluate and write the run directory. Returns the run's result on rank 0, else None.

    ``args``: ``acmil train``'s arguments (``--overwrite``, ``--resume`` and ``--verbose`` included), or a
    config dict with ``options`` for those three. Lightning's messages go to ``RUN/train.log`` (and to
    stderr under ``--verbose``).
    """
    from .quiet import captured_lightning_output

    if isinstance(args, dict):
        options = options or RunOptions()
    else:
        own, args = split_own_flags(list(args))
        options = options or own
    with captured_lightning_output(options.verbose) as log:
        from .lightning_run import train

        return train(args, options, on_run_dir=lambda root: log.open(root / "train.log"))


def train_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants(argv, "-h", "--help"):
        _train_summary().print_help()
        return 0
    if _wants(argv, "--help-all"):
        import warnings

        from .lightning_run import ACMILCLI

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "args parameter ... sys.argv": on purpose
            ACMILCLI(["--help"])  # prints every option and exits
        return 0
    result = run_train(argv)
    if result is not None:
        from .progress import metrics_table

        print(metrics_table(result.metrics))
        print(
            f"run directory: {result.run_dir}  (best checkpoint: {result.best_checkpoint}, "
            f"full log: {result.run_dir / 'train.log'})"
        )
    return 0


def test_main(argv: list[str] | None = None) -> int:
    """``acmil test --checkpoint CKPT --data.features_dir DIR --data.labels_csv FILE --out DIR``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants(argv, "-h", "--help"):
        _test_summary().print_help()
        return 0
    from acmil.command import config_from

    from .evaluate import TestConfig, run_test, test_parser
    from .progress import metrics_table

    config = config_from(test_parser().parse_args(["--help"] if _wants(argv, "--help-all") else argv), TestConfig)
    result = run_test(config)
    print(metrics_table(result.metrics))
    n = len(result.predictions.slide_ids)
    print(f"wrote {result.paths['metrics']} and {result.paths['predictions']} ({n} slides)")
    return 0
