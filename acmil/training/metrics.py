"""Slide-level metrics (torchmetrics, with ``task`` and ``average`` spelt out) and evaluation of a split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score, MulticlassRecall

METRIC_NAMES = ("accuracy", "balanced_accuracy", "f1_macro", "auc")


def make_metrics(n_classes: int, prefix: str = "", validate_args: bool = True) -> MetricCollection:
    """accuracy (micro), balanced accuracy (= macro recall), macro-F1, macro one-vs-rest AUC."""
    # Micro-F1 equals accuracy for single-label classification, hence macro; "average" is explicit because
    # torchmetrics' default changed between versions (the reference code's "F1" silently became accuracy).
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=n_classes, validate_args=validate_args, average="micro"),
            "balanced_accuracy": MulticlassRecall(num_classes=n_classes, validate_args=validate_args, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes=n_classes, validate_args=validate_args, average="macro"),
            "auc": MulticlassAUROC(num_classes=n_classes, validate_args=validate_args, average="macro"),
        },
        prefix=prefix,
    )


def metric_values(probs: np.ndarray, targets: np.ndarray, n_classes: int) -> dict[str, float]:
    """Metrics of probabilities (n, C) against integer targets (n,); {} for an empty split."""
    if len(targets) == 0:
        return {}
    metrics = make_metrics(n_classes)
    values = metrics(torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.long))
    return {k: float(v) for k, v in values.items()}


@torch.inference_mode()
def predict_dataset(model: nn.Module, dataset: Any, device: torch.device | str = "cpu") -> tuple[np.ndarray, ...]:
    """Eval-mode probabilities of every bag of a dataset, one bag at a time (exact, no padding).

    Returns:
        probs (n, C), targets (n,), cohort indices (n,).
    """
    was_training = model.training
    model.eval()
    probs, targets, indices = [], [], []
    try:
        for item in range(len(dataset)):
            bag = dataset[item]
            out = model(bag["features"].to(device)[None])  # (1, N, D) -> logits (1, C)
            probs.append(torch.softmax(out.logits.float(), dim=-1)[0].cpu().numpy())
            targets.append(bag["label"])
            indices.append(bag["index"])
    finally:
        model.train(was_training)
    n_classes = getattr(model, "n_classes", 0)
    probs_arr = np.stack(probs) if probs else np.zeros((0, n_classes), dtype=np.float32)
    return probs_arr, np.asarray(targets, dtype=int), np.asarray(indices, dtype=int)


def prediction_rows(
    slide_ids: list[str],
    probs: np.ndarray,
    class_names: list[str],
    labels: list[str] | None = None,
    split: str | None = None,
) -> list[dict[str, Any]]:
    """CSV rows: slide_id, [split], [label], predicted, prob_<class> per class."""
    rows = []
    for j, sid in enumerate(slide_ids):
        row: dict[str, Any] = {"slide_id": sid}
        if split is not None:
            row["split"] = split
        if labels is not None:
            row["label"] = labels[j]
        row["predicted"] = class_names[int(np.argmax(probs[j]))]
        row.update({f"prob_{c}": f"{float(p):.6f}" for c, p in zip(class_names, probs[j], strict=True)})
        rows.append(row)
    return rows
