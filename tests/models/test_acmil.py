"""ACMIL: the behaviour the paper and the reference code fix."""

from __future__ import annotations

import pytest
import torch

from acmil.models import ACMIL, diversity_loss

D, C = 32, 3


def _model(**kwargs) -> ACMIL:
    torch.manual_seed(0)
    return ACMIL(D, C, **kwargs)


def test_output_shapes_and_attention_sums_to_one():
    model = _model().eval()
    out = model(torch.randn(2, 40, D))
    assert out.logits.shape == (2, C)
    assert out.attention.shape == (2, 5, 40)
    assert out.branch_logits.shape == (2, 5, C)
    assert out.embedding.shape == (2, D // 2)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 5))


def test_eval_is_deterministic_and_unmasked():
    model = _model().eval()
    x = torch.randn(1, 60, D)
    first, second = model(x), model(x)
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    assert (first.attention > 0).all(), "no instance may be masked in eval mode"


@pytest.mark.parametrize("n_instances, top_k, mask_ratio", [(60, 10, 0.6), (7, 10, 0.6), (100, 20, 0.25)])
def test_training_masks_exactly_k_times_ratio_from_each_branch_topk(n_instances, top_k, mask_ratio):
    model = _model(top_k=top_k, mask_ratio=mask_ratio).train()
    x = torch.randn(3, n_instances, D)
    out = model(x)
    logits = model.attention(model.embed_instances(x))  # (B, M, N), unmasked logits
    k = min(top_k, n_instances)
    expected = int(k * mask_ratio)
    zero = out.attention == 0
    assert (zero.sum(-1) == expected).all()
    topk = logits.topk(k, dim=-1).indices
    in_topk = torch.zeros_like(zero).scatter_(-1, topk, True)
    assert not (zero & ~in_topk).any(), "masked instances must come from the branch's own top-k"
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(3, 5))


def test_masking_never_picks_padding_and_padding_gets_zero():
    model = _model(top_k=10, mask_ratio=0.6).train()
    x = torch.randn(2, 30, D) * 5
    x[1, 12:] = 100.0  # padded rows with huge values would win the top-k if they were considered
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 12:] = False
    out = model(x, mask)
    assert (out.attention[1, :, 12:] == 0).all()
    assert ((out.attention[1, :, :12] == 0).sum(-1) == int(10 * 0.6)).all()
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 5))


def test_seed_fixes_the_masking():
    model = _model().train()
    x = torch.randn(1, 50, D)
    torch.manual_seed(7)
    a = model(x).attention
    torch.manual_seed(7)
    b = model(x).attention
    torch.manual_seed(8)
    c = model(x).attention
    assert torch.equal(a == 0, b == 0)
    assert not torch.equal(a == 0, c == 0)


def test_slide_embedding_is_mean_of_branch_embeddings():
    model = _model().eval()
    x = torch.randn(1, 25, D)
    out = model(x)
    h = model.embed_instances(x)
    branch_emb = torch.bmm(out.attention, h)  # (1, M, H)
    torch.testing.assert_close(out.embedding, branch_emb.mean(1))
    torch.testing.assert_close(out.logits, model.slide_head(branch_emb.mean(1)))


def test_batched_bags_equal_one_bag_at_a_time():
    model = _model().eval()
    sizes = [17, 40, 5]
    bags = [torch.randn(n, D) for n in sizes]
    x = torch.zeros(3, max(sizes), D)
    mask = torch.zeros(3, max(sizes), dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, : len(bag)] = bag
        mask[i, : len(bag)] = True
    batched = model(x, mask)
    for i, bag in enumerate(bags):
        single = model(bag[None])
        torch.testing.assert_close(batched.logits[i], single.logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched.branch_logits[i], single.branch_logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batched.attention[i, :, : len(bag)], single.attention[0], rtol=1e-5, atol=1e-6)
        assert (batched.attention[i, :, len(bag) :] == 0).all()


def test_loss_terms_are_named_scalars_and_weighted():
    model = _model().train()
    out = model(torch.randn(2, 30, D))
    target = torch.tensor([0, 2])
    terms = model.compute_loss(out, target)
    assert set(terms) == {"loss", "branch_ce", "slide_ce", "diversity"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    torch.testing.assert_close(terms["loss"], terms["branch_ce"] + terms["slide_ce"] + terms["diversity"])
    weighted = model.compute_loss(out, target, branch_weight=0.5, slide_weight=2.0, diversity_weight=0.0)
    torch.testing.assert_close(weighted["loss"], 0.5 * terms["branch_ce"] + 2.0 * terms["slide_ce"])


def test_diversity_is_near_one_for_near_uniform_attention_and_zero_for_disjoint():
    near_uniform = torch.full((1, 4, 100), 0.01) + 1e-4 * torch.rand(1, 4, 100)
    assert diversity_loss(near_uniform).item() == pytest.approx(1.0, abs=1e-3)
    disjoint = torch.eye(4)[None]  # each branch attends a different instance
    assert diversity_loss(disjoint).item() == pytest.approx(0.0, abs=1e-6)


def test_one_branch_has_zero_branch_and_diversity_terms():
    model = _model(n_branches=1).train()
    terms = model.compute_loss(model(torch.randn(1, 20, D)), torch.tensor([1]))
    assert terms["branch_ce"].item() == 0.0 and terms["diversity"].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_autocast_runs_with_float32_attention(dtype):
    model = _model().train()
    x = torch.randn(2, 64, D)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[0, 50:] = False
    with torch.autocast("cpu", dtype=dtype):
        out = model(x, mask)
        loss = model.compute_loss(out, torch.tensor([0, 1]))["loss"]
    loss.backward()
    assert out.attention.dtype == torch.float32
    assert torch.isfinite(loss)
    assert (out.attention[0, :, 50:] == 0).all()
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 5))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="mask_ratio"):
        ACMIL(D, C, mask_ratio=1.5)
    with pytest.raises(ValueError, match="n_branches"):
        ACMIL(D, C, n_branches=0)
