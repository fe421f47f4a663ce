"""A plain-torch training loop (one bag per step, like the reference code) shared by the test fixtures
that need a real trained checkpoint without going through Lightning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def fit_bags(
    model: nn.Module,
    bags: Sequence[tuple[torch.Tensor, int]],
    epochs: int,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    shuffle: bool = False,
) -> nn.Module:
    """Train ``model`` with Adam on (features (N, D), label) bags; returns it in eval mode.

    Runs on one thread: the matrices are tiny, and extra threads only spin (60x slower on a busy 2-core box).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(bags)).tolist() if shuffle else range(len(bags))
            for j in order:
                feats, label = bags[j]
                loss = model.compute_loss(model(feats[None]), torch.tensor([label]))["loss"]
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()
