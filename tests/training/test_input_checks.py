"""Clear refusals before training: one class, too few slides per split, labels files in other encodings,
and numeric labels spelt two ways."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from acmil.synthetic.features import make_cohort
from acmil.training.cohort import DataValidationError, read_labels
from acmil.training.data import FeatureDataModule


def _relabel(labels_csv: Path, out: Path, mapping, encoding: str = "utf-8") -> Path:
    with labels_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with out.open("w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "label": mapping(i, row["label"])})
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("small"), n_slides=12, n_patches=(5, 10), dim=8, seed=3)


def test_a_single_class_is_refused_before_training_with_the_counts(small, tmp_path, train_args) -> None:
    from acmil.training.cli import run_train

    one = _relabel(small.labels_csv, tmp_path / "one.csv", lambda i, lab: "tumour")
    run = tmp_path / "run"
    with pytest.raises(
        DataValidationError,
        match=r"at least two classes, found 1 \(slides per class: "
        r"\{'tumour': 12\}\)",
    ) as info:
        run_train([*train_args(small, run, 1), "--data.labels_csv", str(one)])
    assert str(one) in str(info.value)
    assert not (run / "checkpoints").exists()  # refused before an epoch ran
    assert "slides per class" in (run / "train.log").read_text() or (run / "train.log").exists()
    # the corrected labels train into the same folder: a refused run's lone log does not make it "not empty"
    assert run_train([*train_args(small, run, 1)]).metrics["val"]


def test_numeric_labels_1_and_1_0_are_one_class(small, tmp_path) -> None:
    mixed = _relabel(
        small.labels_csv,
        tmp_path / "mixed.csv",
        lambda i, lab: ("1" if i % 4 == 1 else "1.0") if lab == "tumour" else ("0" if i % 3 else "0.0"),
    )
    dm = FeatureDataModule(str(small.features_dir), str(mixed))
    assert dm.class_names == ["0", "1"]
    assert sorted(set(dm.cohort.targets)) == [0, 1]
    # a label map given as 0.0 / 1.0 (an older checkpoint's) matches them too
    assert FeatureDataModule(str(small.features_dir), str(mixed), class_names=["0.0", "1.0"]).cohort.targets


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_labels_with_a_byte_order_mark_are_read(small, tmp_path, encoding) -> None:
    path = _relabel(small.labels_csv, tmp_path / "bom.csv", lambda i, lab: lab, encoding)
    rows, problems = read_labels(path)
    assert problems == [] and len(rows) == 12 and {r.label for r in rows} == {"normal", "tumour"}


def test_latin1_labels_name_the_file(small, tmp_path) -> None:
    path = _relabel(small.labels_csv, tmp_path / "latin1.csv", lambda i, lab: lab + "é", "latin-1")
    rows, problems = read_labels(path)
    assert rows == [] and len(problems) == 1
    assert str(path) in problems[0] and "not UTF-8" in problems[0] and "0xe9" in problems[0]


def test_two_slides_say_how_many_slides_per_class_a_split_needs(tmp_path) -> None:
    c = make_cohort(tmp_path / "two", n_slides=2, n_patches=(5, 10), dim=8, seed=1)
    with pytest.raises(DataValidationError) as info:
        FeatureDataModule(str(c.features_dir), str(c.labels_csv)).prepare()
    message = str(info.value)
    assert "needs at least 3 slides (cases) per class" in message and str(c.labels_csv) in message
    assert "'normal': 1" in message and "n_samples" not in message


def test_test_command_names_a_missing_labels_csv(small, tmp_path, trained_run) -> None:
    from acmil.cli import main

    missing = tmp_path / "gone.csv"
    ckpt = trained_run["run"] / "checkpoints" / "best.ckpt"
    with pytest.raises(DataValidationError) as info:
        from acmil.training.cli import test_main

        test_main(
            [
                "--checkpoint",
                str(ckpt),
                "--data.features_dir",
                str(small.features_dir),
                "--data.labels_csv",
                str(missing),
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert f"{missing}: labels CSV not found" in str(info.value)
    assert "nothing was evaluated" in str(info.value) and "trained" not in str(info.value)
    assert (
        main(
            [
                "test",
                "--checkpoint",
                str(ckpt),
                "--data.features_dir",
                str(small.features_dir),
                "--data.labels_csv",
                str(missing),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
