"""Reference checkpoints (github dazhangyu123/ACMIL, ``ACMIL_GA``) import with identical outputs.

The reference model is re-implemented here from the published equations, independently of
``acmil.models``, with the reference's parameter names, one bag at a time as the reference runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acmil.checkpoint import load_model
from acmil.cli import main as cli_main
from acmil.models import ACMIL


class PublishedACMIL(nn.Module):
    """ACMIL_GA in eval mode: h = ReLU(W x); a_m = softmax_n(w_m^T (tanh(V h) * sigm(U h)));
    z_m = sum_n a_mn h_n; branch logits = head_m(z_m); slide logits = head((1/M) sum_m z_m)."""

    def __init__(self, d_feat: int, d_inner: int, attn_dim: int, n_token: int, n_class: int) -> None:
        super().__init__()
        self.dimreduction = nn.Module()
        self.dimreduction.fc1 = nn.Linear(d_feat, d_inner, bias=False)
        self.attention = nn.Module()
        self.attention.attention_V = nn.Sequential(nn.Linear(d_inner, attn_dim), nn.Tanh())
        self.attention.attention_U = nn.Sequential(nn.Linear(d_inner, attn_dim), nn.Sigmoid())
        self.attention.attention_weights = nn.Linear(attn_dim, n_token)
        self.classifier = nn.ModuleList()
        for _ in range(n_token):
            head = nn.Module()
            head.fc = nn.Linear(d_inner, n_class)
            self.classifier.append(head)
        self.Slide_classifier = nn.Module()
        self.Slide_classifier.fc = nn.Linear(d_inner, n_class)

    def forward(self, x: torch.Tensor):  # x: (N, D), one bag
        h = F.relu(self.dimreduction.fc1(x))
        gate = self.attention.attention_V(h) * self.attention.attention_U(h)
        a = F.softmax(self.attention.attention_weights(gate).T, dim=1)  # (M, N)
        z = a @ h  # (M, H)
        branch = torch.stack([head.fc(z[i]) for i, head in enumerate(self.classifier)])
        slide = self.Slide_classifier.fc(z.mean(0))
        return branch, slide, a


def _reference(seed: int = 0) -> PublishedACMIL:
    torch.manual_seed(seed)
    ref = PublishedACMIL(d_feat=48, d_inner=24, attn_dim=16, n_token=5, n_class=3).eval()
    for p in ref.parameters():  # away from init so a swapped tensor could not pass unnoticed
        nn.init.normal_(p, std=0.3)
    return ref


def test_from_reference_state_dict_gives_identical_outputs():
    ref = _reference()
    model = ACMIL.from_reference_state_dict(ref.state_dict()).eval()
    assert (model.in_dim, model.hidden_dim, model.n_branches, model.n_classes) == (48, 24, 5, 3)
    for n in (1, 7, 300):
        x = torch.randn(n, 48)
        branch, slide, attention = ref(x)
        out = model(x[None])
        torch.testing.assert_close(out.logits[0], slide, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.branch_logits[0], branch, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.attention[0], attention, rtol=1e-5, atol=1e-6)


def test_import_checkpoint_command_writes_a_servable_checkpoint(tmp_path):
    ref = _reference(1)
    ref_file = tmp_path / "acmil_ref.pth"
    # The reference scripts save {'model': state_dict, 'optimizer': ..., 'epoch': ...}, DataParallel-prefixed at times.
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}, ref_file)
    out = tmp_path / "model.ckpt"
    assert cli_main(["import-checkpoint", str(ref_file), "--out", str(out), "--classes", "a,b,c"]) == 0
    loaded = load_model(out)
    assert loaded.card.class_names == ["a", "b", "c"] and loaded.card.in_dim == 48
    x = torch.randn(50, 48)
    torch.testing.assert_close(loaded.model(x[None]).logits[0], ref(x)[1], rtol=1e-5, atol=1e-5)


def test_import_checkpoint_rejects_other_files(tmp_path, capsys):
    bad = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, bad)
    assert cli_main(["import-checkpoint", str(bad), "--out", str(tmp_path / "x.ckpt")]) == 1
    assert "other.pth" in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def test_a_checkpoint_saved_by_the_reference_script_imports_without_its_code(
    tmp_path, save_like_reference, reference_config
):
    """The config is a pickled ``utils.utils.Struct``: no reference code, no wandb; masking, branches, classes
    and the epoch come from it."""
    ref = _reference(4)
    ref_file = save_like_reference(
        tmp_path / "checkpoint-last.pth",
        ref.state_dict(),
        37,
        **reference_config,
        n_class=3,
        n_token=5,
        n_masked_patch=8,
        mask_drop=0.5,
        arch="ga",
        D_feat=48,
        D_inner=24,
    )
    out = tmp_path / "model.ckpt"
    assert cli_main(["import-checkpoint", str(ref_file), "--out", str(out)]) == 0
    card = load_model(out).card
    assert card.arch == "acmil" and card.class_names == ["class_0", "class_1", "class_2"]
    assert card.arch_args["n_branches"] == 5 and card.arch_args["top_k"] == 8 and card.arch_args["mask_ratio"] == 0.5
    assert card.extra["epoch"] == 37 and card.extra["reference_config"]["pretrain"] == "medical_ssl"
    x = torch.randn(20, 48)
    torch.testing.assert_close(load_model(out).model(x[None]).logits[0], ref(x)[1], rtol=1e-5, atol=1e-5)
    # an explicit flag wins over the saved config
    assert cli_main(["import-checkpoint", str(ref_file), "--out", str(out), "--top-k", "3"]) == 0
    assert load_model(out).card.arch_args["top_k"] == 3


def test_a_saved_config_that_contradicts_the_weights_is_refused(tmp_path, save_like_reference, capsys):
    ref_file = save_like_reference(tmp_path / "r.pth", _reference(5).state_dict(), 1, n_class=2, n_token=5)
    assert cli_main(["import-checkpoint", str(ref_file), "--out", str(tmp_path / "x.ckpt")]) == 1
    assert "the saved config says n_class=2 but the weights have 3" in capsys.readouterr().err


def test_import_never_imports_the_reference_code_even_when_it_is_on_the_path(
    tmp_path, monkeypatch, save_like_reference
):
    """Run from inside the reference repository, ``utils.utils`` would import wandb (and anything else)."""
    ref_file = save_like_reference(tmp_path / "r.pth", _reference(7).state_dict(), 2, n_class=3, n_token=5)
    repo = tmp_path / "ACMIL"
    (repo / "utils").mkdir(parents=True)
    (repo / "utils" / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (repo / "utils" / "utils.py").write_text(f"open({str(marker)!r}, 'w').close()\nimport wandb\n")
    monkeypatch.syspath_prepend(str(repo))
    assert cli_main(["import-checkpoint", str(ref_file), "--out", str(tmp_path / "m.ckpt")]) == 0
    assert not marker.exists() and load_model(tmp_path / "m.ckpt").card.extra["epoch"] == 2
