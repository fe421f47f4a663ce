"""Reading the labels CSV and checking a cohort of feature files before any training starts.

Every problem found is collected, and one :class:`DataValidationError` lists them all (file or CSV row
each), so a user fixes the whole input in one pass instead of one failed run per bad file.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.features import FeatureFileError, list_feature_files, read_features, read_meta
from acmil.recipe import cohort_recipe

REQUIRED_COLUMNS = ("slide_id", "label")
SPLIT_NAMES = ("train", "val", "test")


class DataValidationError(ValueError):
    """The input data has problems; the message lists every one of them.

    ``outcome`` ends the first line: what did not happen because of them ("nothing was trained").
    """

    def __init__(self, problems: list[str], source: str = "input data", outcome: str = "nothing was trained") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the {source}, {outcome}:\n{lines}")


def normalise_label(label: str) -> str:
    """One spelling per class: numeric labels are numbers ("1", "1.0" and "01" are class "1"; "0.50" is "0.5").

    Other labels are kept as written (after stripping spaces).
    """
    label = label.strip()
    try:
        value = float(label)
    except ValueError:
        return label
    if not math.isfinite(value):
        return label
    return str(int(value)) if value.is_integer() else repr(value)


# Byte-order marks: a spreadsheet's "Unicode text" export is UTF-16 with one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_text_file(path: Path, what: str = "CSV") -> str:
    """A text file's content: UTF-8 (with or without BOM), or UTF-16/32 with a BOM; else a clear error."""
    raw = path.read_bytes()
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: the {what} is not {encoding.upper()} text (byte 0x{raw[err.start]:02x} at "
            f"offset {err.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)"
        ) from None


@dataclass
class LabelRow:
    """One row of the labels CSV; ``line`` is its 1-based line number in the file (the header is line 1)."""

    line: int
    slide_id: str
    label: str
    split: str = ""
    case_id: str = ""


@dataclass
class Cohort:
    """A checked cohort: labelled slides with feature files, class names and the feature width."""

    rows: list[LabelRow]
    paths: list[Path]
    targets: list[int]
    n_patches: list[int]
    class_names: list[str]
    in_dim: int
    encoder: dict[str, Any] = field(default_factory=dict)

    @property
    def slide_ids(self) -> list[str]:
        return [r.slide_id for r in self.rows]

    @property
    def groups(self) -> list[str]:
        """Case of each slide (the slide itself when no case_id is given)."""
        return [r.case_id or r.slide_id for r in self.rows]

    @property
    def has_split_column(self) -> bool:
        return any(r.split for r in self.rows)

    def bag_bytes(self, i: int) -> int:
        """Bytes of slide ``i``'s features as float32 in memory."""
        return int(self.n_patches[i]) * self.in_dim * 4


def read_labels(path: str | os.PathLike) -> tuple[list[LabelRow], list[str]]:
    """Rows of a labels CSV, and the problems found in it (missing columns, empty or duplicate cells)."""
    path = Path(path)
    if not path.is_file():
        return [], [f"{path}: labels CSV not found"]
    try:
        text = read_text_file(path, "labels CSV")
    except (OSError, ValueError) as err:
        return [], [str(err)]
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            return [], [f"{path}: missing required column(s) {missing} (found columns: {header})"]
        reader.fieldnames = header
        rows, problems, seen = [], [], {}
        for line, raw in enumerate(reader, start=2):
            cell = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            split, case = cell.get("split", "").lower(), cell.get("case_id", "")
            row = LabelRow(line, cell["slide_id"], normalise_label(cell["label"]), split, case)
            where = f"{path}, line {line}"
            if not row.slide_id:
                problems.append(f"{where}: empty slide_id")
                continue
            if not row.label:
                problems.append(f"{where} (slide {row.slide_id}): empty label")
            if row.split and row.split not in SPLIT_NAMES:
                problems.append(f"{where} (slide {row.slide_id}): split {row.split!r} is not one of {SPLIT_NAMES}")
            if row.slide_id in seen:
                problems.append(f"{where}: slide {row.slide_id} already listed on line {seen[row.slide_id]}")
                continue
            seen[row.slide_id] = line
            rows.append(row)
    if not rows and not problems:
        problems.append(f"{path}: no labelled slides")
    if any(r.split for r in rows) and not all(r.split for r in rows):
        empty = [str(r.line) for r in rows if not r.split]
        problems.append(f"{path}: the split column is empty on line(s) {', '.join(empty[:20])}")
    return rows, problems


def infer_class_names(labels: list[str]) -> list[str]:
    """Classes in order of first appearance; integer labels (0, 1, ...) are ordered numerically."""
    unique = list(dict.fromkeys(lab for lab in labels if lab))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def scan_cohort(
    features_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    class_names: list[str] | None = None,
    check_values: bool = True,
    on_features: Any = None,
    outcome: str = "nothing was trained",
) -> Cohort:
    """Check labels and feature files; raise one :class:`DataValidationError` listing every problem.

    Args:
        class_names: the label map to use; labels outside it are errors. None: inferred from the CSV.
        check_values: stream every file once to look for NaN/inf (one slide in memory at a time).
        on_features: optional callback(index, features) called with each slide's features while streaming
            (used to fill an in-memory cache without a second read).
    """
    rows, problems = read_labels(labels_csv)
    try:
        files = list_feature_files(features_dir)
    except FeatureFileError as err:
        raise DataValidationError(problems + [str(err)], outcome=outcome) from None
    names = list(class_names) if class_names else infer_class_names([r.label for r in rows])
    index = {normalise_label(name): i for i, name in enumerate(names)}
    for r in rows:
        if r.label and r.label not in index:
            problems.append(
                f"{labels_csv}, line {r.line} (slide {r.slide_id}): unknown label {r.label!r} (classes: {names})"
            )
    kept, metas = [], []
    for r in rows:
        path = files.get(r.slide_id)
        if path is None:
            problems.append(
                f"{labels_csv}, line {r.line}: no feature file for slide {r.slide_id} "
                f"({Path(features_dir) / (r.slide_id + '.h5')} does not exist)"
            )
            continue
        try:
            meta = read_meta(path)
        except FeatureFileError as err:
            problems.append(str(err))
            continue
        if meta.n_patches == 0:
            problems.append(f"{path}: empty bag (0 patches)")
            continue
        kept.append(r)
        metas.append(meta)
    dims = Counter(m.dim for m in metas)
    in_dim = dims.most_common(1)[0][0] if dims else 0
    if len(dims) > 1:
        for m in metas:
            if m.dim != in_dim:
                problems.append(f"{m.path}: feature dim {m.dim}, but {dims[in_dim]} other file(s) have {in_dim}")
    encoders = Counter(str(m.attrs["encoder"]) for m in metas if m.attrs.get("encoder"))
    if len(encoders) > 1:
        problems.append(f"{features_dir}: features come from different encoders {dict(encoders)}")
    recipe, recipe_problems = cohort_recipe(metas)  # the full recipe, identical across the cohort
    if len(encoders) <= 1:  # different encoders are already named above
        problems += [f"{features_dir}: {p}" for p in recipe_problems]
    if check_values:  # also when other files failed, so one run lists every problem
        for i, m in enumerate(metas):
            try:
                feats = read_features(m.path, validate=True).features
            except FeatureFileError as err:
                problems.append(str(err))
                continue
            if on_features is not None:
                on_features(i, feats)
    if problems:
        raise DataValidationError(problems, outcome=outcome)
    encoder = recipe
    return Cohort(
        rows=kept,
        paths=[m.path for m in metas],
        targets=[index[r.label] for r in kept],
        n_patches=[m.n_patches for m in metas],
        class_names=names,
        in_dim=in_dim,
        encoder=encoder,
    )


def class_counts(cohort: Cohort) -> dict[str, int]:
    """Slides per class, in label-map order."""
    counts = Counter(cohort.targets)
    return {name: counts.get(i, 0) for i, name in enumerate(cohort.class_names)}


def check_trainable(cohort: Cohort, labels_csv: str | os.PathLike) -> None:
    """A classifier needs slides of at least two classes; refuse before any epoch is spent."""
    counts = class_counts(cohort)
    present = {name: n for name, n in counts.items() if n}
    if len(present) < 2:
        raise DataValidationError(
            [
                f"{labels_csv}: a classifier needs slides of at least two classes, found "
                f"{len(present)} (slides per class: {counts})"
            ]
        )


def check_split_sizes(cohort: Cohort, labels_csv: str | os.PathLike, val_fraction: float, test_fraction: float) -> None:
    """Each class needs a case in every split it is drawn into: train, and validation / test when asked for
    (``test_fraction`` 1.0 stands for cross-validation's test fold). Else sklearn fails with "n_samples=1"."""
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    cases: dict[str, set[str]] = {name: set() for name in cohort.class_names}
    for target, group in zip(cohort.targets, cohort.groups, strict=True):
        cases[cohort.class_names[target]].add(group)
    short = {name: len(c) for name, c in cases.items() if len(c) < needed}
    if short:
        have = ", ".join(f"{name!r}: {len(c)}" for name, c in cases.items())
        splits = " + ".join(["train"] + ["validation"] * (val_fraction > 0) + ["test"] * (test_fraction > 0))
        raise DataValidationError(
            [
                f"{labels_csv}: a split into {splits} needs at least {needed} slides (cases) per class, one for "
                f"each split; cases per class: {have}. Add slides or give the CSV a split column"
                + (
                    f" (or set --data.test_fraction 0: no test split, {needed - 1} per class)"
                    if 0 < test_fraction < 1
                    else ""
                )
            ]
        )


def check_split_classes(cohort: Cohort, splits: dict[str, list[int]]) -> None:
    """Every class must be present in the training split (else the model can never predict it)."""
    counts = np.bincount(np.asarray(cohort.targets, dtype=int)[splits["train"]], minlength=len(cohort.class_names))
    missing = [name for name, c in zip(cohort.class_names, counts, strict=True) if c == 0]
    if missing:
        raise DataValidationError(
            [f"class {name!r} has no slide in the training split ({len(splits['train'])} slides)" for name in missing]
        )
