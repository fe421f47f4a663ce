"""The data module: lazy reads, padding + masks, cache, and every kind of bad input rejected up front."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from acmil.features import read_feature_matrix, write_features
from acmil.synthetic.features import make_cohort
from acmil.training.cohort import DataValidationError
from acmil.training.data import FeatureDataModule, collate_bags


@pytest.fixture()
def small(tmp_path: Path):
    return make_cohort(tmp_path / "c", n_slides=16, n_patches=(5, 9), dim=8, seed=1)


def _rewrite_labels(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or list(rows[0])
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_collate_pads_and_masks() -> None:
    bags = [{"features": torch.ones(n, 3) * n, "label": n % 2, "index": n} for n in (2, 5, 3)]
    batch = collate_bags(bags)
    assert batch["features"].shape == (3, 5, 3) and batch["mask"].shape == (3, 5)
    assert batch["mask"].sum(1).tolist() == [2, 5, 3]
    assert batch["features"][0, 2:].abs().sum() == 0 and batch["features"][0, :2].eq(2).all()
    assert batch["label"].tolist() == [0, 1, 1] and batch["index"].tolist() == [2, 5, 3]
    single = collate_bags(bags[:1])
    assert single["mask"] is None and single["features"].shape == (1, 2, 3)


def test_data_module_reads_lazily_and_links(small) -> None:
    dm = FeatureDataModule(small.features_dir, small.labels_csv, batch_size=4, seed=0)
    assert dm.in_dim == 8 and dm.class_names == ["normal", "tumour"]
    assert dm.encoder.get("encoder") == "synthetic"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"].shape[0] == 4 and batch["mask"] is not None
    n_real = batch["mask"].sum(1)
    for j, i in enumerate(batch["index"].tolist()):
        assert n_real[j] == dm.cohort.n_patches[i]
    assert sum(len(v) for v in dm.splits.values()) == 16


def test_cache_is_filled_by_the_validation_scan(small) -> None:
    dm = FeatureDataModule(small.features_dir, small.labels_csv, cache=True, seed=0)
    dm.setup("fit")
    assert len(dm.dataset("train").cache) == 16
    item = dm.dataset("val")[0]
    assert np.array_equal(item["features"].numpy(), dm.dataset("val").cache[item["index"]])


def test_auto_cache_is_the_default_and_fills_when_the_cohort_is_small(small) -> None:
    dm = FeatureDataModule(small.features_dir, small.labels_csv, check_values=False, seed=0)
    dm.setup("fit")
    assert len(dm.dataset("val").cache) == 16  # filled before any worker starts
    off = FeatureDataModule(small.features_dir, small.labels_csv, cache=False, seed=0)
    assert off.dataset("train").cache is None


def test_evaluation_alone_keeps_no_bags_unless_asked(small) -> None:
    """``acmil test`` reads each bag once: "auto" keeps none there; ``cache=True`` still does."""
    for mode, kept in (("auto", None), (True, 16)):
        dm = FeatureDataModule(small.features_dir, small.labels_csv, cache=mode, seed=0)
        dm.evaluation_only = True
        dm.setup("test")
        cache = dm.dataset("test").cache
        assert (None if cache is None else len(cache)) == kept


@pytest.mark.parametrize("check_values", [True, False])
def test_auto_cache_keeps_to_its_budget(small, monkeypatch, check_values) -> None:
    """With room for three bags, three are kept (the first read) and the others are read from their files."""
    import acmil.training.bag_cache as bag_cache

    cohort = FeatureDataModule(small.features_dir, small.labels_csv, cache=False).cohort
    budget = sum(cohort.bag_bytes(i) for i in range(3))
    monkeypatch.setattr(bag_cache, "available_memory", lambda: budget * bag_cache.AUTO_SHARE)
    dm = FeatureDataModule(small.features_dir, small.labels_csv, check_values=check_values, seed=0)
    dm.setup("fit")
    cache = dm.dataset("train").cache
    assert sorted(cache._bags) == [0, 1, 2] and cache.used == budget
    for split in ("train", "val", "test"):  # every bag reads the same with and without the cache
        ds = dm.dataset(split)
        for item in range(len(ds)):
            i = ds.indices[item]
            assert np.array_equal(ds[item]["features"].numpy(), read_feature_matrix(dm.cohort.paths[i]))
    assert len(cache) == 3 and cache.used <= budget


def test_dataloader_workers_add_nothing_to_the_cache(monkeypatch) -> None:
    """A worker's additions would stay in its own copy (one cohort per worker): only the main process adds."""
    import acmil.training.bag_cache as bag_cache

    cache = bag_cache.BagCache()
    cache.put(0, np.zeros((4, 2), np.float32))
    monkeypatch.setattr(bag_cache, "get_worker_info", lambda: object())  # as inside a DataLoader worker
    cache.put(1, np.zeros((4, 2), np.float32))
    assert 0 in cache and 1 not in cache and cache.used == 32


def test_split_column_is_used(tmp_path: Path) -> None:
    c = make_cohort(tmp_path / "c", n_slides=20, n_patches=(5, 9), dim=8, split_column=True)
    dm = FeatureDataModule(c.features_dir, c.labels_csv)
    rows = _rows(c.labels_csv)
    assert [dm.cohort.slide_ids[i] for i in dm.splits["test"]] == [r["slide_id"] for r in rows if r["split"] == "test"]
    assert dm.splits_record()["source"] == "csv"


def test_every_bad_input_is_listed_in_one_error(small) -> None:
    feats = small.features_dir
    (feats / "slide_0000.h5").unlink()  # missing feature file
    good = feats / "slide_0001.h5"
    data = good.read_bytes()
    (feats / "slide_0002.h5").write_bytes(data[: len(data) // 2])  # truncated
    (feats / "slide_0003.h5").write_text("not an HDF5 file")  # not HDF5
    write_features(feats / "slide_0004.h5", np.zeros((6, 16), np.float32), np.zeros((6, 2)))  # other dim
    write_features(feats / "slide_0005.h5", np.zeros((0, 8), np.float32), np.zeros((0, 2)))  # empty bag
    nan = np.zeros((6, 8), np.float32)
    nan[3, 1] = np.nan
    write_features(feats / "slide_0006.h5", nan, np.zeros((6, 2)))  # NaN
    inf = np.zeros((6, 8), np.float32)
    inf[0, 0] = np.inf
    write_features(feats / "slide_0007.h5", inf, np.zeros((6, 2)))  # inf
    rows = _rows(small.labels_csv)
    rows[8]["label"] = "metastasis"  # unknown label (line 10 of the CSV)
    _rewrite_labels(small.labels_csv, rows)
    dm = FeatureDataModule(feats, small.labels_csv, class_names=["normal", "tumour"])
    with pytest.raises(DataValidationError) as info:
        dm.prepare()
    msg = str(info.value)
    assert len(info.value.problems) == 8, msg
    assert "slide_0000" in msg and "no feature file" in msg
    assert "slide_0002.h5" in msg and "slide_0003.h5" in msg
    assert "slide_0004.h5: feature dim 16" in msg
    assert "slide_0005.h5: empty bag" in msg
    assert "slide_0006.h5: 1 patch rows contain NaN or inf" in msg and "slide_0007.h5" in msg
    assert "line 10" in msg and "unknown label 'metastasis'" in msg


def test_missing_columns(small) -> None:
    rows = _rows(small.labels_csv)
    _rewrite_labels(small.labels_csv, rows, ["slide_id", "case_id"])
    with pytest.raises(DataValidationError, match=r"missing required column\(s\) \['label'\]"):
        FeatureDataModule(small.features_dir, small.labels_csv).prepare()


def test_class_missing_from_training_split(tmp_path: Path) -> None:
    c = make_cohort(tmp_path / "c", n_slides=20, n_patches=(5, 9), dim=8, split_column=True)
    rows = _rows(c.labels_csv)
    for r in rows:  # every tumour slide goes to test
        if r["label"] == "tumour":
            r["split"] = "test"
    _rewrite_labels(c.labels_csv, rows)
    with pytest.raises(DataValidationError, match="class 'tumour' has no slide in the training split"):
        FeatureDataModule(c.features_dir, c.labels_csv).prepare()


def test_cli_rejects_bad_input_before_training(small, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from acmil.cli import main

    shutil.copyfile(small.features_dir / "slide_0001.h5", small.features_dir / "unlabelled.h5")  # ignored
    (small.features_dir / "slide_0009.h5").write_text("garbage")
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--data.features_dir",
            str(small.features_dir),
            "--data.labels_csv",
            str(small.labels_csv),
            "--trainer.default_root_dir",
            str(run),
            "--trainer.max_epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("acmil train: error: 1 problem(s)") and "slide_0009.h5" in err
    assert not (run / "checkpoints").exists()


class _Bags(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"features": torch.full((3 + i, 2), float(i)), "label": i % 2, "index": i}


def _collate_reporting_shared(batch: list[dict]) -> dict:
    out = collate_bags(batch)
    out["built_shared"] = torch.tensor(out["features"].is_shared())  # checked in the worker, before the hand-off
    return out


def test_worker_batches_are_built_in_shared_memory() -> None:
    loader = torch.utils.data.DataLoader(_Bags(), batch_size=2, num_workers=1, collate_fn=_collate_reporting_shared)
    batches = list(loader)
    assert all(bool(b["built_shared"]) for b in batches)
    assert batches[0]["features"].shape == (2, 4, 2) and batches[0]["mask"].tolist()[0] == [True] * 3 + [False]
    assert not collate_bags([_Bags()[0], _Bags()[1]])["features"].is_shared()  # the main process: plain memory
