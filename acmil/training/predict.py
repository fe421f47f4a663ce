"""``acmil predict --checkpoint CKPT --features DIR --out FILE.csv``: slide predictions without Lightning.

Several ``--checkpoint`` (files, run directories or a cv directory: every fold's best.ckpt) of one recipe,
feature width and label map form an ensemble (:mod:`acmil.ensemble`): the CSV's probabilities are the mean
of the members' temperature-scaled ones, and ``--per-model`` adds each member's as ``m<k>_prob_<class>``.

One unreadable feature file does not stop the others: it is reported on stderr and the exit code is 1,
while every other slide's prediction is written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from acmil.atomic import write_csv
from acmil.command import AppendAction, CommandParser, as_list, command_parser, config_from


class NothingPredicted(ValueError):
    """Every feature file was skipped: no CSV is written (an earlier one is kept)."""


DESCRIPTION = """\
Predict slides with a trained checkpoint, from their feature files, into a CSV (slide_id, [label],
predicted, one prob_<class> column per class). Lightning is not needed. A file that cannot be read, or
whose feature width is not the model's, is reported and skipped; when every file is skipped nothing is
written and the exit code is 1.

example:
  acmil predict --checkpoint runs/acmil/checkpoints/best.ckpt --features features --out predictions.csv
  acmil predict --checkpoint runs/cv --features features --out predictions.csv --per-model   (fold ensemble)"""


@dataclass(kw_only=True)
class PredictConfig:
    """``acmil predict``'s options (a config file's keys are these names). One of ``features`` / ``slides``."""

    checkpoint: list[str]  # checkpoints, run or cv directories; several form an ensemble
    out: str  # the CSV (with ``slides``: a folder)
    features: str | None = None
    slides: str | None = None
    per_model: bool = False
    encoder_weights: str | None = None
    labels_csv: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.checkpoint = as_list(self.checkpoint)  # a config file may name one checkpoint without a list


@dataclass(kw_only=True)
class PredictResult:
    """What ``acmil predict`` wrote.

    Attributes:
        csv: the predictions CSV.
        rows: its rows (slide_id, [label], predicted, prob_<class>, [m<k>_prob_<class>]) as strings.
        skipped: with ``features``, one message per feature file that could not be predicted.
        failures: with ``slides``, slide_id -> why it failed (also in ``failures.csv``).
        seconds: with ``slides``, per slide: stage -> seconds.
    """

    csv: Path
    rows: list[dict[str, str]]
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)  # every file written: the CSV first

    def __post_init__(self) -> None:
        self.paths = self.paths or [self.csv]


def config_problem(config: PredictConfig) -> str | None:
    """Why ``config`` cannot run (a misuse of the options), or None."""
    if bool(config.features) == bool(config.slides):
        return "give exactly one of --features and --slides"
    return None


def run_predict(config: PredictConfig) -> PredictResult:
    """Predict feature files or raw slides into ``config.out``, with one checkpoint or an ensemble."""
    problem = config_problem(config)
    if problem:
        raise ValueError(problem)
    if config.slides:
        from acmil.predict_slides import predict_slides

        done = predict_slides(
            checkpoint=config.checkpoint if len(config.checkpoint) > 1 else config.checkpoint[0],
            slides=config.slides,
            out=config.out,
            device=config.device,
            weights_file=config.encoder_weights,
            per_model=config.per_model,
        )
        out = Path(config.out)
        written = [done.csv] + [out / "heatmaps" / f"{row['slide_id']}.png" for row in done.rows]
        written += [out / "failures.csv"] if done.failures else []
        return PredictResult(csv=done.csv, rows=done.rows, failures=done.failures, seconds=done.seconds, paths=written)
    return predict_features(
        checkpoint=config.checkpoint,
        features=config.features,
        out=config.out,
        labels_csv=config.labels_csv,
        device=config.device,
        per_model=config.per_model,
    )


def build_parser() -> CommandParser:
    p = command_parser("acmil predict", DESCRIPTION)
    p.add_argument(
        "--checkpoint",
        required=True,
        action=AppendAction,
        help="best.ckpt from training, an imported checkpoint, a run directory or a cv directory (every "
        "fold's best.ckpt); repeat it for an ensemble of one recipe: probabilities are averaged",
    )
    p.add_argument(
        "--per-model",
        action="store_true",
        help="with several checkpoints: also each model's probabilities (m<k>_prob_<class> columns); with "
        "--slides also each model's heatmap and GeoJSON attention",
    )
    p.add_argument("--features", help="folder of <slide_id>.h5 feature files (or one .h5 file)")
    p.add_argument(
        "--slides",
        help="raw slides (folder, files separated by commas, or CSV): preprocessed with the "
        "checkpoint's recipe, cached under --out",
    )
    p.add_argument("--encoder-weights", help="with --slides: the encoder's weights file when the recipe used one")
    p.add_argument("--out", required=True, help="CSV to write (with --slides: a folder)")
    p.add_argument("--labels-csv", default=None, help="optional labels CSV: adds the true label column")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    return p


def predict_folder(
    checkpoint: str | Path | list[str | Path],
    features: str | Path,
    out: str | Path,
    labels_csv: str | Path | None = None,
    device: str = "cpu",
    per_model: bool = False,
) -> tuple[Path, list[str]]:
    """:func:`predict_features`' CSV path and list of per-file errors."""
    result = predict_features(checkpoint, features, out, labels_csv, device, per_model)
    return result.csv, result.skipped


def predict_features(
    checkpoint: str | Path | list[str | Path],
    features: str | Path,
    out: str | Path,
    labels_csv: str | Path | None = None,
    device: str = "cpu",
    per_model: bool = False,
) -> PredictResult:
    """Predict every feature file with one checkpoint or an ensemble (a list, or a cv directory); a file that
    cannot be read is skipped (``skipped``). Raises EnsembleMismatch for checkpoints that cannot be averaged."""
    from acmil.ensemble import load_ensemble
    from acmil.features import FeatureFileError, list_feature_files, read_features
    from acmil.inference import check_feature_width

    from .cohort import read_labels
    from .metrics import prediction_rows

    ensemble = load_ensemble(checkpoint if isinstance(checkpoint, list) else [checkpoint]).to(device)
    names, k_models = ensemble.class_names, len(ensemble.members)
    per_model = per_model and k_models > 1
    features = Path(features)
    files = {features.stem: features} if features.is_file() else list_feature_files(features)
    if not files:
        raise FileNotFoundError(f"{features}: no .h5 feature files")
    truth: dict[str, str] | None = None
    if labels_csv:
        rows, problems = read_labels(labels_csv)
        if problems:
            raise ValueError("; ".join(problems))
        truth = {r.slide_id: r.label for r in rows}
    out_rows, errors = [], []
    for sid, path in files.items():
        try:
            slide = read_features(path)
            check_feature_width(slide.dim, ensemble.in_dim, path)
        except FeatureFileError as err:
            errors.append(str(err))
            continue
        pred = ensemble.predict(slide.features)
        labels = [truth.get(sid, "")] if truth is not None else None
        row = prediction_rows([sid], pred.probabilities[None], names, labels)[0]
        if per_model:
            row.update(
                {
                    f"m{k}_prob_{c}": f"{float(p):.6f}"
                    for k, probs in enumerate(pred.member_probabilities)
                    for c, p in zip(names, probs, strict=True)
                }
            )
        out_rows.append(row)
    if not out_rows:  # never replace an earlier CSV with a header-only one
        listed = "\n".join(f"  - {e}" for e in errors)
        raise NothingPredicted(
            f"none of the {len(files)} feature file(s) in {features} could be predicted, "
            f"{out} was not written:\n{listed}"
        )
    fields = ["slide_id"] + (["label"] if truth is not None else []) + ["predicted"] + [f"prob_{c}" for c in names]
    if per_model:
        fields += [f"m{k}_prob_{c}" for k in range(k_models) for c in names]
    return PredictResult(csv=write_csv(out, out_rows, fields), rows=out_rows, skipped=errors)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = config_from(parser.parse_args(argv), PredictConfig)
    problem = config_problem(config)
    if problem:
        parser.error(problem)
    if config.slides:
        done = run_predict(config)
        print(
            f"wrote {done.csv} ({len(done.rows)} slide(s)"
            + (f", {len(done.failures)} failed" if done.failures else "")
            + ")"
        )
        return 1 if done.failures else 0
    from acmil.ensemble import EnsembleMismatch

    try:
        result = run_predict(config)
    except (EnsembleMismatch, FileNotFoundError) as err:
        print(f"acmil predict: {err}", file=sys.stderr)
        return 2
    for err in result.skipped:
        print(f"acmil predict: skipped {err}", file=sys.stderr)
    print(f"wrote {result.csv}" + (f" ({len(result.skipped)} file(s) skipped)" if result.skipped else ""))
    return 1 if result.skipped else 0
