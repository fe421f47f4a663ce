"""Generated cohorts of feature files with a planted instance-level signal (tests, benchmarks, demos).

Background patches are Gaussian noise. A bag of class c > 0 holds a few "tumour" patches shifted along a
class-specific direction; class 0 bags hold none. Only attention to those few patches separates the
classes, as in real whole-slide classification. Files are format-1 (``acmil.features.write_features``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acmil.atomic import write_csv
from acmil.features import write_features


@dataclass
class SyntheticCohort:
    features_dir: Path
    labels_csv: Path
    class_names: list[str]
    labels: dict[str, str]
    tumour: dict[str, np.ndarray]  # slide_id -> (N,) bool: which patches carry the signal


def make_cohort(
    out_dir: str | os.PathLike,
    n_slides: int = 40,
    n_patches: tuple[int, int] = (60, 120),
    dim: int = 32,
    class_names: tuple[str, ...] = ("normal", "tumour"),
    class_weights: tuple[float, ...] | None = None,
    tumour_fraction: float = 0.1,
    signal: float = 1.5,
    slides_per_case: int = 1,
    split_column: bool = False,
    dtype: str = "float32",
    seed: int = 0,
) -> SyntheticCohort:
    """Write ``out_dir/features/<slide>.h5`` and ``out_dir/labels.csv``.

    Args:
        n_patches: (min, max) patches per slide, drawn uniformly.
        class_weights: class frequencies (default balanced); classes are assigned so each appears.
        tumour_fraction: share of patches carrying the class signal in bags of class > 0.
        signal: shift of tumour patches along their class direction (in noise standard deviations).
        slides_per_case: slides sharing one ``case_id`` (and one label).
        split_column: write a ``split`` column (60/20/20 by case) instead of leaving the split to training.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    n_classes = len(class_names)
    weights = np.asarray(class_weights or [1.0] * n_classes, dtype=float)
    n_cases = max(n_classes, int(np.ceil(n_slides / slides_per_case)))
    # Deterministic class counts proportional to the weights, each class at least once.
    counts = np.maximum(1, np.floor(weights / weights.sum() * n_cases)).astype(int)
    counts[0] += n_cases - counts.sum()
    case_labels = rng.permutation(np.repeat(np.arange(n_classes), counts))
    directions = rng.normal(size=(n_classes, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels, tumour, rows = {}, {}, []
    slide = 0
    for case, label in enumerate(case_labels):
        split = ("train", "train", "train", "val", "test")[case % 5]
        for _ in range(slides_per_case):
            if slide >= n_slides:
                break
            sid = f"slide_{slide:04d}"
            n = int(rng.integers(n_patches[0], n_patches[1] + 1))
            feats = rng.normal(size=(n, dim)).astype(np.float32)
            is_tumour = np.zeros(n, dtype=bool)
            if label > 0:
                k = max(1, int(round(tumour_fraction * n)))
                is_tumour[rng.choice(n, size=k, replace=False)] = True
                feats[is_tumour] += signal * directions[label]
            side = int(np.ceil(np.sqrt(n)))
            coords = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(np.int64) * 224
            write_features(
                feat_dir / f"{sid}.h5",
                feats.astype(dtype),
                coords,
                attrs={"slide_id": sid, "encoder": "synthetic", "encoder_weights": "random"},
                coord_attrs={"patch_size": 224, "patch_size_level0": 224, "name": sid},
            )
            labels[sid], tumour[sid] = class_names[label], is_tumour
            rows.append({"slide_id": sid, "label": class_names[label], "case_id": f"case_{case:04d}", "split": split})
            slide += 1
    labels_csv = out / "labels.csv"
    fields = ["slide_id", "label", "case_id"] + (["split"] if split_column else [])
    write_csv(labels_csv, rows, fields)
    return SyntheticCohort(feat_dir, labels_csv, list(class_names), labels, tumour)
