"""Every registered model passes the same checklist (the timm habit)."""

from __future__ import annotations

import pytest
import torch

from acmil.models import MODELS, MILOutput, create_model

B, N, D, C = 2, 9, 16, 3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shapes_with_and_without_mask(name):
    torch.manual_seed(0)
    model = create_model(name, D, C).eval()
    x = torch.randn(B, N, D)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 5:] = False
    for m in (None, mask):
        out = model(x, m)
        assert isinstance(out, MILOutput)
        assert out.logits.shape == (B, C)
        assert out.attention.shape[0] == B and out.attention.shape[2] == N
        assert torch.isfinite(out.logits).all()
        torch.testing.assert_close(out.attention.sum(-1), torch.ones(out.attention.shape[:2]))
    assert (model(x, mask).attention[1, :, 5:] == 0).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, D, C).train()
    out = model(torch.randn(B, N, D))
    terms = model.compute_loss(out, torch.tensor([0, 2]))
    assert "loss" in terms and all(t.ndim == 0 for t in terms.values())
    terms["loss"].backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batched_equals_single(name):
    torch.manual_seed(0)
    model = create_model(name, D, C).eval()
    a, b = torch.randn(4, D), torch.randn(N, D)
    x = torch.zeros(2, N, D)
    x[0, :4], x[1] = a, b
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[0, :4], mask[1] = True, True
    out = model(x, mask)
    torch.testing.assert_close(out.logits[0], model(a[None]).logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits[1], model(b[None]).logits[0], rtol=1e-5, atol=1e-5)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'transformer'"):
        create_model("transformer", D, C)
