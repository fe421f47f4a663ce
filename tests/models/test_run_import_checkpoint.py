"""``run_import_checkpoint`` returns the checkpoint it wrote and the card stored in it."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from acmil.checkpoint import load_model
from acmil.reference import ImportCheckpointConfig, run_import_checkpoint


def _reference_state_dict(d_feat: int = 24, d_inner: int = 12, n_token: int = 4, n_class: int = 2) -> dict:
    """Random weights under the reference ACMIL_GA's parameter names."""
    torch.manual_seed(0)
    ref = nn.Module()
    ref.dimreduction = nn.Module()
    ref.dimreduction.fc1 = nn.Linear(d_feat, d_inner, bias=False)
    ref.attention = nn.Module()
    ref.attention.attention_V = nn.Sequential(nn.Linear(d_inner, 8), nn.Tanh())
    ref.attention.attention_U = nn.Sequential(nn.Linear(d_inner, 8), nn.Sigmoid())
    ref.attention.attention_weights = nn.Linear(8, n_token)
    ref.classifier = nn.ModuleList()
    for _ in range(n_token):
        head = nn.Module()
        head.fc = nn.Linear(d_inner, n_class)
        ref.classifier.append(head)
    ref.Slide_classifier = nn.Module()
    ref.Slide_classifier.fc = nn.Linear(d_inner, n_class)
    return ref.state_dict()


def test_run_import_checkpoint_returns_the_written_card(tmp_path, save_like_reference):
    ref_file = save_like_reference(
        tmp_path / "r.pth", _reference_state_dict(), 9, n_class=2, n_token=4, n_masked_patch=6
    )
    out = tmp_path / "imported.ckpt"
    result = run_import_checkpoint(ImportCheckpointConfig(reference=ref_file, out=out, classes="benign, malignant"))
    assert result.checkpoint == out and result.paths == [out]
    assert result.card.class_names == ["benign", "malignant"] and result.card.arch_args["top_k"] == 6
    assert result.card.arch_args["n_branches"] == 4 and result.card.in_dim == 24
    assert result.card.extra["epoch"] == 9
    assert asdict(load_model(out).card) == asdict(result.card)  # the card returned is the card written
