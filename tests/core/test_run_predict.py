"""``run_predict`` returns the rows it wrote to the CSV, and refuses a config the parser would refuse."""

from __future__ import annotations

import csv

import pytest
import torch

from acmil.checkpoint import ModelCard, build_model, save_model
from acmil.synthetic.features import make_cohort
from acmil.training.predict import PredictConfig, run_predict


def test_run_predict_returns_the_csv_rows_and_the_skipped_files(tmp_path) -> None:
    cohort = make_cohort(tmp_path / "cohort", n_slides=4, seed=5)
    torch.manual_seed(0)
    card = ModelCard(arch="acmil", arch_args={"hidden_dim": 16}, in_dim=32, class_names=["normal", "tumour"])
    save_model(tmp_path / "m.ckpt", build_model(card).eval(), card)
    (cohort.features_dir / "broken.h5").write_bytes(b"not an HDF5 file")  # skipped, the others predicted
    out = tmp_path / "pred.csv"
    result = run_predict(
        PredictConfig(checkpoint=[str(tmp_path / "m.ckpt")], features=str(cohort.features_dir), out=str(out))
    )
    with out.open(newline="") as fh:
        written = list(csv.DictReader(fh))
    assert result.csv == out and result.paths == [out]
    assert [dict(r) for r in result.rows] == written and len(written) == 4
    assert len(result.skipped) == 1 and "broken.h5" in result.skipped[0]
    with pytest.raises(ValueError, match="exactly one of --features and --slides"):
        run_predict(PredictConfig(checkpoint=[str(tmp_path / "m.ckpt")], out=str(out)))
