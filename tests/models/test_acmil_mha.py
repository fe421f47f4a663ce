"""ACMIL_MHA (the reference's ``--arch mha``) matches the published equations, masks as the reference, trains.

The reference model is re-implemented here from its equations, independently of ``acmil.models``: one bag
at a time, head by head and branch by branch with explicit loops, under the reference's parameter names.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acmil.models import ACMILMHA, create_model

HEADS = 8


def _linear(d_in: int, d_out: int) -> nn.Linear:
    return nn.Linear(d_in, d_out)


class PublishedMHA(nn.Module):
    """ACMIL_MHA in eval mode, written from the paper code's equations for one bag x (N, D):

    h = ReLU(W x); for branch m and head k (slices of width c = H / 8):
      s_mk = (Wq_m q_m)_k . (Wk_m h_n)_k / sqrt(c),  a_mk = softmax_n(s_mk) (masked entries set to -1e9),
      z_m = LN_m(Wo_m concat_k(sum_n a_mkn (Wv_m h_n)_k)),  branch logits_m = head_m(z_m);
    bag weights b_k = mean_m a_mk; z = LN(Wo concat_k(sum_n b_kn (Wv h_n)_k)); slide logits = head(z).
    """

    def __init__(self, d_feat: int, d_inner: int, n_token: int, n_class: int) -> None:
        super().__init__()
        self.dimreduction = nn.Module()
        self.dimreduction.fc1 = nn.Linear(d_feat, d_inner, bias=False)
        self.q = nn.Parameter(torch.zeros(1, n_token, d_inner))
        self.sub_attention = nn.ModuleList()
        for _ in range(n_token):
            block = nn.Module()
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                setattr(block, name, _linear(d_inner, d_inner))
            block.layer_norm = nn.LayerNorm(d_inner, eps=1e-6)
            self.sub_attention.append(block)
        self.bag_attention = nn.Module()
        self.bag_attention.v_proj = _linear(d_inner, d_inner)
        self.bag_attention.out_proj = _linear(d_inner, d_inner)
        self.bag_attention.layer_norm = nn.LayerNorm(d_inner, eps=1e-6)
        self.classifier = nn.ModuleList()
        for _ in range(n_token):
            head = nn.Module()
            head.fc = nn.Linear(d_inner, n_class)
            self.classifier.append(head)
        self.Slide_classifier = nn.Module()
        self.Slide_classifier.fc = nn.Linear(d_inner, n_class)
        self.n_token, self.d_inner = n_token, d_inner

    @staticmethod
    def _pool(block: nn.Module, weights: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        c = h.shape[1] // HEADS
        v = block.v_proj(h)  # (N, H)
        parts = [weights[k] @ v[:, k * c : (k + 1) * c] for k in range(HEADS)]  # 8 x (c,)
        return block.layer_norm(block.out_proj(torch.cat(parts)))

    def forward(self, x: torch.Tensor, masked: torch.Tensor | None = None):
        """x: (N, D); masked: (M, 8, N) bool of entries set to -1e9 before the softmax (training)."""
        h = F.relu(self.dimreduction.fc1(x))
        c = self.d_inner // HEADS
        att = torch.zeros(self.n_token, HEADS, x.shape[0])
        branch = []
        for m, block in enumerate(self.sub_attention):
            q, k = block.q_proj(self.q[0, m]), block.k_proj(h)
            per_head = []
            for j in range(HEADS):
                s = k[:, j * c : (j + 1) * c] @ q[j * c : (j + 1) * c] / math.sqrt(c)  # (N,)
                if masked is not None:
                    s = s.masked_fill(masked[m, j], -1e9)
                per_head.append(torch.softmax(s, dim=0))
            att[m] = torch.stack(per_head)
            branch.append(self.classifier[m].fc(self._pool(block, per_head, h)))
        bag_weights = [att[:, j].mean(0) for j in range(HEADS)]
        slide = self.Slide_classifier.fc(self._pool(self.bag_attention, bag_weights, h))
        return torch.stack(branch), slide, att


def _reference(seed: int = 0, n_token: int = 5) -> PublishedMHA:
    torch.manual_seed(seed)
    ref = PublishedMHA(d_feat=48, d_inner=32, n_token=n_token, n_class=3).eval()
    for p in ref.parameters():  # away from init so a swapped tensor could not pass unnoticed
        nn.init.normal_(p, std=0.3)
    return ref


def max_abs_error_against_reference(seed: int = 0) -> float:
    """The largest difference in logits, branch logits or attention over a few bag sizes (eval mode)."""
    ref = _reference(seed)
    model = ACMILMHA.from_reference_state_dict(ref.state_dict()).eval()
    worst = 0.0
    with torch.no_grad():
        for n in (1, 7, 300):
            x = torch.randn(n, 48)
            branch, slide, att = ref(x)
            out = model(x[None])
            worst = max(
                worst,
                (out.logits[0] - slide).abs().max().item(),
                (out.branch_logits[0] - branch).abs().max().item(),
                (out.head_attention[0] - att).abs().max().item(),
                (out.attention[0] - att.mean(1)).abs().max().item(),
            )
    return worst


def test_eval_mode_matches_the_reference_equations():
    model = ACMILMHA.from_reference_state_dict(_reference().state_dict())
    assert (model.in_dim, model.hidden_dim, model.n_branches, model.n_classes) == (48, 32, 5, 3)
    error = max_abs_error_against_reference()
    print(f"ACMIL_MHA max abs error against the reference equations: {error:.2e}")
    assert error < 1e-5


def test_training_masks_like_the_reference():
    """In training each (branch, head) row hides int(min(top_k, N) * mask_ratio) of its top_k logits; with
    the same hidden entries the reference gives the same outputs."""
    torch.manual_seed(3)
    ref = _reference(2)
    model = ACMILMHA.from_reference_state_dict(ref.state_dict(), top_k=10, mask_ratio=0.6, attn_dropout=0.0)
    x = torch.randn(40, 48)
    model.train()
    out = model(x[None])
    att = out.head_attention[0]  # (M, 8, N)
    hidden = att == 0
    assert (hidden.sum(-1) == 6).all()  # int(10 * 0.6) per row
    model.eval()
    logits = torch.stack([s(model.queries[i], model.reduce(x[None]))[0] for i, s in enumerate(model.branch_scores)])
    top10 = logits.topk(10, dim=-1).indices  # (M, 8, 10)
    assert hidden.gather(-1, top10).sum(-1).eq(6).all()  # hidden entries all among the row's top 10
    with torch.no_grad():
        branch, slide, ref_att = ref(x, masked=hidden)
    torch.testing.assert_close(att, ref_att, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits[0], slide, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.branch_logits[0], branch, rtol=1e-5, atol=1e-5)
    model.train()
    assert not torch.equal(model(x[None]).head_attention == 0, hidden)  # a new random choice each pass


def test_attention_follows_the_shared_contract():
    torch.manual_seed(0)
    model = create_model("acmil_mha", 24, 2, n_branches=3, hidden_dim=16).eval()
    x, mask = torch.randn(2, 9, 24), torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    out = model(x, mask)
    assert out.logits.shape == (2, 2) and out.attention.shape == (2, 3, 9) and out.branch_logits.shape == (2, 3, 2)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 3))
    assert (out.attention[1, :, 6:] == 0).all()


def test_diversity_is_per_head_like_the_reference():
    torch.manual_seed(0)
    model = create_model("acmil_mha", 24, 2, n_branches=3, hidden_dim=16).eval()
    out = model(torch.randn(1, 30, 24))
    att = out.head_attention[0]  # (M, K, N)
    expected = sum(F.cosine_similarity(att[i], att[j], dim=-1).mean() for i in range(3) for j in range(i + 1, 3)) / 3
    terms = model.compute_loss(out, torch.tensor([1]))
    torch.testing.assert_close(terms["diversity"], expected)
    torch.testing.assert_close(terms["loss"], terms["branch_ce"] + terms["slide_ce"] + terms["diversity"])


def test_hidden_width_must_split_into_heads():
    with pytest.raises(ValueError, match="n_heads=8 must divide the hidden width 12"):
        create_model("acmil_mha", 24, 2, hidden_dim=12)


def test_reference_mha_checkpoint_imports_serves_and_keeps_its_recipe(tmp_path, save_like_reference, reference_config):
    from acmil.checkpoint import load_model
    from acmil.cli import main as cli_main

    ref = _reference(6)
    ref_file = save_like_reference(
        tmp_path / "checkpoint-best.pth",
        {f"module.{k}": v for k, v in ref.state_dict().items()},
        12,
        **reference_config,
        n_class=3,
        n_token=5,
        n_masked_patch=10,
        mask_drop=0.6,
        arch="mha",
        D_feat=48,
        D_inner=32,
    )
    out = tmp_path / "mha.ckpt"
    assert cli_main(["import-checkpoint", str(ref_file), "--out", str(out), "--classes", "a,b,c"]) == 0
    loaded = load_model(out)
    assert loaded.card.arch == "acmil_mha" and loaded.card.extra["epoch"] == 12
    assert loaded.card.arch_args == {"n_branches": 5, "top_k": 10, "mask_ratio": 0.6, "hidden_dim": 32, "n_heads": 8}
    x = torch.randn(64, 48)
    with torch.no_grad():
        branch, slide, att = ref(x)
        out_ = loaded.model(x[None])
    torch.testing.assert_close(out_.logits[0], slide, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_.attention[0], att.mean(1), rtol=1e-5, atol=1e-6)


def test_an_mha_checkpoint_is_served_and_drawn_like_the_gated_one(tmp_path):
    """``acmil serve`` (a real uvicorn process) answers prediction, per-branch attention and the heatmap."""
    import socket
    import subprocess
    import sys
    import time

    import httpx
    import numpy as np

    from acmil.checkpoint import ModelCard, save_model
    from acmil.features import read_features, write_features

    torch.manual_seed(0)
    model = create_model("acmil_mha", 32, 2, n_branches=3)
    ckpt = save_model(tmp_path / "mha.ckpt", model, ModelCard("acmil_mha", {"n_branches": 3}, 32, ["normal", "tumour"]))
    features = tmp_path / "features"
    features.mkdir()
    coords = np.array([[x * 256, y * 256] for y in range(4) for x in range(6)], np.int64)
    write_features(
        features / "s1.h5",
        np.random.default_rng(0).normal(size=(24, 32)).astype(np.float32),
        coords,
        coord_attrs={"patch_size_level0": 256, "level0_width": 1536, "level0_height": 1024},
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acmil",
            "serve",
            "--checkpoint",
            str(ckpt),
            "--features",
            str(features),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "acmil serve did not start"
            time.sleep(0.2)
        pred = httpx.get(f"{base}/slides/s1/prediction", timeout=30)
        assert pred.status_code == 200, pred.text
        mean = httpx.get(f"{base}/slides/s1/attention", timeout=30).json()
        branch = httpx.get(f"{base}/slides/s1/attention", params={"branch": 2}, timeout=30).json()
        assert mean["n_branches"] == 3 and len(mean["scores"]) == 24 and len(branch["scores"]) == 24
        png = httpx.get(f"{base}/slides/s1/heatmap.png", params={"max_size": 128}, timeout=30)
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()
    with torch.no_grad():
        att = model.eval()(torch.from_numpy(read_features(features / "s1.h5").features)[None]).attention[0]
    np.testing.assert_allclose(mean["scores"], att.mean(0).numpy(), rtol=1e-4, atol=1e-6)
