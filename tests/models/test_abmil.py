"""ABMIL is ACMIL with one branch and no masking."""

from __future__ import annotations

import torch

from acmil.models import ABMIL, ACMIL


def test_abmil_is_one_branch_acmil_without_masking():
    torch.manual_seed(0)
    abmil = ABMIL(24, 2).train()
    out = abmil(torch.randn(2, 30, 24))
    assert out.attention.shape == (2, 1, 30)
    assert (out.attention > 0).all(), "ABMIL never masks instances, even in training"
    assert abmil.n_branches == 1 and abmil.mask_ratio == 0.0


def test_abmil_matches_acmil_with_the_same_weights():
    torch.manual_seed(0)
    abmil = ABMIL(24, 3).eval()
    acmil = ACMIL(24, 3, n_branches=1, top_k=0, mask_ratio=0.0).eval()
    acmil.load_state_dict(abmil.state_dict())
    x = torch.randn(1, 12, 24)
    torch.testing.assert_close(abmil(x).logits, acmil(x).logits)
