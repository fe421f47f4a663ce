"""The LightningDataModule: per-slide HDF5 feature files + a labels CSV -> bags of patch features.

Slides are read one file per item; by default the bags that fit in a third of the available memory stay
in memory after their first read (``cache``, :mod:`acmil.training.bag_cache`). Bags of different lengths
are padded in :func:`collate_bags`, with a boolean mask (True = real patch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from acmil.atomic import write_json
from acmil.features import read_feature_matrix

from .bag_cache import BagCache
from .cohort import (
    SPLIT_NAMES,
    Cohort,
    DataValidationError,
    check_split_classes,
    check_split_sizes,
    check_trainable,
    scan_cohort,
)
from .splits import make_splits


class BagDataset(Dataset):
    """Slides of one split. Item: {"features": (N, D) float32, "label": int, "index": cohort index}."""

    def __init__(self, cohort: Cohort, indices: list[int], cache: BagCache | None = None) -> None:
        self.cohort, self.indices, self.cache = cohort, list(indices), cache

    def __len__(self) -> int:
        return len(self.indices)

    def features(self, i: int) -> np.ndarray:
        """(N, D) features of cohort slide ``i`` (already validated by the scan, so not checked again)."""
        cached = self.cache.get(i) if self.cache is not None else None
        if cached is not None:
            return cached
        feats = read_feature_matrix(self.cohort.paths[i])
        if self.cache is not None:
            self.cache.put(i, feats)
        return feats

    def __getitem__(self, item: int) -> dict[str, Any]:
        i = self.indices[item]
        return {"features": torch.from_numpy(self.features(i)), "label": self.cohort.targets[i], "index": i}


def _batch_buffer(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised tensor for a batch; in a DataLoader worker it lives in shared memory already.

    This is what torch's default_collate does: otherwise the worker copies the whole batch into shared
    memory once more to hand it to the main process (a second pass over hundreds of MB per batch).
    """
    if get_worker_info() is None:
        return like.new_empty(shape)
    # Public API: moving a fresh (untouched) buffer costs less than moving the filled batch later.
    return torch.empty(shape, dtype=like.dtype, device=like.device).share_memory_()


def collate_bags(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor | None]:
    """Stack bags into {"features": (B, N_max, D), "mask": (B, N_max) bool or None, "label": (B,), "index": (B,)}.

    A single bag (or bags of equal length) needs no mask; the models then skip masking work.
    """
    feats = [b["features"] for b in batch]
    lengths = [f.shape[0] for f in feats]
    n_max = max(lengths)
    mask = None
    if len(feats) == 1:
        x = feats[0].unsqueeze(0)  # (1, N, D): a view, no copy of the bag
    else:
        x = _batch_buffer(feats[0], (len(feats), n_max, feats[0].shape[1]))  # (B, N_max, D)
        for j, f in enumerate(feats):
            x[j, : f.shape[0]] = f
            x[j, f.shape[0] :] = 0
        if any(n != n_max for n in lengths):
            mask = torch.arange(n_max)[None, :] < torch.tensor(lengths)[:, None]  # (B, N_max) bool
    return {
        "features": x,
        "mask": mask,
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
    }


class FeatureDataModule(L.LightningDataModule):
    """Bags of patch features for training, validation and test.

    Args:
        features_dir: folder of ``<slide_id>.h5`` feature files.
        labels_csv: CSV with ``slide_id``, ``label`` and optional ``split`` and ``case_id`` columns.
        class_names: label map in index order; default: the CSV's labels in order of first appearance.
        batch_size: bags per training step (> 1 pads bags and passes a mask).
        eval_batch_size: bags per validation/test step; default ``batch_size``.
        num_workers: DataLoader worker processes reading the files; default: 4 (at most the CPU count minus
            one) when CUDA is available, so reading overlaps the GPU's work, else 0 (on CPU the cores are
            busy computing).
        cache: keep bags in memory after their first read (the cohort scan's, when ``check_values``). "auto"
            (default): the bags that fit in a third of the memory available at the scan, the first ones read;
            True: every bag; False: none, every epoch reads the files. It never changes what is trained.
        val_fraction: share of cases in the validation split (when the CSV has no ``split`` column); 0: no
            validation split, the last epoch is the run's checkpoint (``acmil cv --selection last``).
        test_fraction: share of cases in the test split (idem).
        seed: seed of the split; default: the run's ``seed_everything``.
        folds: K for cross-validation: test = fold ``fold``, validation = ``val_fraction`` of the rest.
        fold: which fold is the test set.
        splits_file: a ``splits.json`` from an earlier run to reuse its split.
        check_values: read every file once before training to reject NaN/inf features.
        pin_memory: page-locked batches for asynchronous copies to the GPU; default: with CUDA and workers
            (without workers, pinning is one more copy of every bag in the training loop's own thread).
        description: what the slides are (e.g. "synthetic slides of `acmil demo`"), kept in the model card.
    """

    def __init__(
        self,
        features_dir: str,
        labels_csv: str,
        class_names: list[str] | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        cache: bool | Literal["auto"] = "auto",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int | None = None,
        folds: int | None = None,
        fold: int = 0,
        splits_file: str | None = None,
        check_values: bool = True,
        pin_memory: bool | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__()
        self.features_dir, self.labels_csv = Path(features_dir), Path(labels_csv)
        self._class_names_arg = list(class_names) if class_names else None
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        if num_workers is None:
            num_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if torch.cuda.is_available() else 0
        self.num_workers, self.cache_mode = num_workers, cache
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed, self.folds, self.fold = seed, folds, fold
        self.splits_file, self.check_values = splits_file, check_values
        self.pin_memory = (torch.cuda.is_available() and num_workers > 0) if pin_memory is None else pin_memory
        self._cohort: Cohort | None = None
        self._splits: dict[str, list[int]] | None = None
        self._split_source = ""
        self._cache: BagCache | None = None
        self._datasets: dict[str, BagDataset] = {}
        self.evaluation_only = False  # set by ``acmil test``: no training split needed
        self.description = description

    # -- the checked cohort (scanned once, on first use: linking in_dim / class_names triggers it) --------
    def prepare(self) -> Cohort:
        """Scan and validate the cohort and make the split; raises DataValidationError listing every problem."""
        if self._cohort is not None:
            return self._cohort
        # One pass over the bags (``acmil test``) gains nothing from keeping them: "auto" keeps none there.
        cache = BagCache.for_mode(False if self.evaluation_only and self.cache_mode == "auto" else self.cache_mode)
        cohort = scan_cohort(
            self.features_dir,
            self.labels_csv,
            self._class_names_arg,
            self.check_values,
            on_features=cache.put if cache is not None else None,  # the value check's read fills the cache
            outcome="nothing was evaluated" if self.evaluation_only else "nothing was trained",
        )
        if not self.evaluation_only:
            check_trainable(cohort, self.labels_csv)  # before the split: one class would fail it less clearly
        if cache is not None:
            # Fill the rest here, in the main process: DataLoader workers then share it (fork, copy-on-write);
            # they add nothing themselves. A bag that cannot fit is not read.
            for i, path in enumerate(cohort.paths):
                if i not in cache and cache.fits(cohort.bag_bytes(i)):
                    cache.put(i, read_feature_matrix(path))
        self._cache = cache
        self._splits = self._make_splits(cohort)
        if not self.evaluation_only:
            check_split_classes(cohort, self._splits)
        # val_fraction 0 asks for no validation split: the last epoch is kept (``acmil cv --selection last``).
        if not self._splits["val"] and not self.evaluation_only and self.val_fraction > 0:
            raise DataValidationError(
                [
                    f"{self.labels_csv}: the validation split is empty (needed to select a model; "
                    "--data.val_fraction 0 trains without one and keeps the last epoch)"
                ]
            )
        self._cohort = cohort
        return cohort

    def _make_splits(self, cohort: Cohort) -> dict[str, list[int]]:
        if self.splits_file:
            self._split_source = f"file:{self.splits_file}"
            data = json.loads(Path(self.splits_file).read_text())
            pos = {sid: i for i, sid in enumerate(cohort.slide_ids)}
            unknown = [s for name in SPLIT_NAMES for s in data.get(name, []) if s not in pos]
            if unknown:
                raise DataValidationError(
                    [f"{self.splits_file}: slide {s} is not in {self.labels_csv}" for s in unknown[:50]]
                )
            return {name: sorted(pos[s] for s in data.get(name, [])) for name in SPLIT_NAMES}
        seed = 0 if self.seed is None else int(self.seed)
        if not cohort.has_split_column and not self.evaluation_only:
            check_split_sizes(cohort, self.labels_csv, self.val_fraction, 1.0 if self.folds else self.test_fraction)
        if self.folds:
            self._split_source = f"cv:{self.fold}/{self.folds}"
        elif cohort.has_split_column:
            self._split_source = "csv"
            return {name: [i for i, r in enumerate(cohort.rows) if r.split == name] for name in SPLIT_NAMES}
        else:
            self._split_source = "stratified"
        return make_splits(
            cohort.targets, cohort.groups, self.val_fraction, self.test_fraction, seed, self.folds, self.fold
        )

    @property
    def cohort(self) -> Cohort:
        return self.prepare()

    @property
    def splits(self) -> dict[str, list[int]]:
        self.prepare()
        assert self._splits is not None
        return self._splits

    @property
    def in_dim(self) -> int:
        """Feature width D read from the files (linked to the model's ``in_dim``)."""
        return self.cohort.in_dim

    @property
    def class_names(self) -> list[str]:
        """The label map (linked to the model's ``class_names``)."""
        return self.cohort.class_names

    @property
    def encoder(self) -> dict[str, Any]:
        """Encoder provenance from the feature files' attributes (stored in the checkpoint)."""
        return self.cohort.encoder

    @property
    def training_cohort(self) -> dict[str, Any]:
        """What the model was trained on, for its card: slides, slides per class, encoder, description."""
        cohort = self.cohort
        counts = {c: sum(t == k for t in cohort.targets) for k, c in enumerate(cohort.class_names)}
        weights = cohort.encoder.get("encoder_weights")
        return {
            "n_slides": len(cohort.rows),
            "classes": counts,
            "encoder": cohort.encoder.get("encoder"),
            "encoder_weights": weights.get("source", weights) if isinstance(weights, dict) else weights,
            "description": self.description,
        }

    def splits_record(self) -> dict[str, Any]:
        """The split as slide ids, with its source and per-class counts (written as ``splits.json``)."""
        cohort, splits = self.cohort, self.splits
        record: dict[str, Any] = {
            "source": self._split_source,
            "seed": self.seed,
            "folds": self.folds,
            "fold": self.fold if self.folds else None,
            "class_names": cohort.class_names,
        }
        record["counts"] = {
            name: {c: sum(cohort.targets[i] == k for i in idx) for k, c in enumerate(cohort.class_names)}
            for name, idx in splits.items()
        }
        record.update({name: [cohort.slide_ids[i] for i in idx] for name, idx in splits.items()})
        return record

    def write_splits(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.splits_record())

    # -- Lightning hooks ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        cohort = self.prepare()
        for name, idx in self.splits.items():
            self._datasets[name] = BagDataset(cohort, idx, self._cache)

    def dataset(self, split: str) -> BagDataset:
        if split not in self._datasets:
            self.setup()
        return self._datasets[split]

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_bags,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)
