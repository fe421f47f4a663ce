"""``acmil predict --checkpoint CKPT --features DIR --out FILE.csv``: slide predictions without Lightning.

Several ``--checkpoint`` (files, run directories or a cv directory: every fold's best.ckpt) of one recipe,
feature width and label map form an ensemble (:mod:`acmil.ensemble`): the CSV's probabilities are the mean
of the members' temperature-scaled ones, and ``--per-model`` adds each member's as ``m<k>_prob_<class>``.

One unreadable feature file does not stop the others: it is reported on stderr and the exit code is 1,
while every other slide's prediction is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from acmil.atomic import write_csv


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acmil predict",
        description=DESCRIPTION,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="best.ckpt from training, an imported checkpoint, a run directory or a cv directory (every "
        "fold's best.ckpt); repeat it for an ensemble of one recipe: probabilities are averaged",
    )
    p.add_argument(
        "--per-model",
        action="store_true",
        help="with several checkpoints: also each model's probabilities (m<k>_prob_<class> columns)",
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
    """Predict every feature file with one checkpoint or an ensemble (a list, or a cv directory); returns the
    CSV path and the list of per-file errors. Raises EnsembleMismatch for checkpoints that cannot be averaged."""
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
    return write_csv(out, out_rows, fields), errors


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.features) == bool(args.slides):
        parser.error("give exactly one of --features and --slides")
    if args.slides:
        from acmil.predict_slides import predict_slides

        if len(args.checkpoint) > 1:
            parser.error("--slides takes one --checkpoint (ensembles predict from --features)")
        done = predict_slides(args.checkpoint[0], args.slides, args.out, args.device, args.encoder_weights)
        print(
            f"wrote {done.csv} ({len(done.rows)} slide(s)"
            + (f", {len(done.failures)} failed" if done.failures else "")
            + ")"
        )
        return 1 if done.failures else 0
    from acmil.ensemble import EnsembleMismatch

    try:
        out, errors = predict_folder(
            args.checkpoint, args.features, args.out, args.labels_csv, args.device, args.per_model
        )
    except (EnsembleMismatch, FileNotFoundError) as err:
        print(f"acmil predict: {err}", file=sys.stderr)
        return 2
    for err in errors:
        print(f"acmil predict: skipped {err}", file=sys.stderr)
    print(f"wrote {out}" + (f" ({len(errors)} file(s) skipped)" if errors else ""))
    return 1 if errors else 0
