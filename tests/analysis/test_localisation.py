"""localisation: AUC of attention against the planted tumour masks, on a model whose attention is known
by construction and on trained checkpoints."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from acmil.analysis.localisation import main, tile_auc
from acmil.analysis.masks import tile_labels
from acmil.checkpoint import ModelCard, save_model
from acmil.features import read_features
from acmil.models import ABMIL


def test_tile_auc_edge_cases() -> None:
    assert tile_auc(np.array([0.1, 0.2]), np.array([True, True])) is None
    assert tile_auc(np.array([0.1, 0.2]), np.array([False, False])) is None
    assert tile_auc(np.array([0.1, 0.9, 0.5]), np.array([False, True, False])) == 1.0


def _oracle_checkpoint(cohort, path):
    """An ABMIL whose attention logit grows with the feature's projection on the planted direction."""
    feats = read_features(cohort.features / "slide_01.h5")
    labels = tile_labels(cohort.masks, feats)
    direction = feats.features[labels].mean(0) - feats.features[~labels].mean(0)
    direction /= np.linalg.norm(direction)
    model = ABMIL(feats.dim, 2, hidden_dim=4, attn_dim=4)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.reduce[0].weight[0] = torch.from_numpy(direction)  # h0 = relu(x . direction)
        model.attention.attention_V[0].weight[0, 0] = 1.0  # tanh(h0)
        model.attention.attention_U[0].bias.fill_(10.0)  # gate open
        model.attention.attention_weights.weight[0, 0] = 8.0
    card = ModelCard(arch="abmil", arch_args={"hidden_dim": 4, "attn_dim": 4}, in_dim=feats.dim, class_names=["n", "t"])
    return save_model(path, model, card)


def test_known_attention_localises(cohort, tmp_path, capsys) -> None:
    ckpt = _oracle_checkpoint(cohort, tmp_path / "oracle.ckpt")
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                "--features",
                str(cohort.features),
                "--masks",
                str(cohort.masks),
                "--out",
                str(tmp_path / "loc"),
            ]
        )
        == 0
    )
    s = json.loads((tmp_path / "loc" / "localisation.json").read_text())
    tumour = sorted(k for k, y in cohort.labels.items() if y)
    assert [r["slide_id"] for r in s["slides"]] == tumour
    assert set(s["skipped"]) == {k for k, y in cohort.labels.items() if not y}  # normal slides: no mask
    assert s["mean_auc"] > 0.9 and s["pooled_auc"] > 0.9
    # Recompute one slide's AUC independently.
    slide = read_features(cohort.features / "slide_03.h5")
    mask = np.zeros(slide.n_patches, dtype=bool)
    from PIL import Image

    m = np.asarray(Image.open(cohort.masks / "slide_03.png")) > 0
    ds = slide.coord_attrs["level0_width"] / m.shape[1]
    for i, (x, y) in enumerate(slide.coords):
        mask[i] = m[int((y + 128) / ds), int((x + 128) / ds)]  # tile centre
    from acmil.checkpoint import load_model
    from acmil.inference import predict_bag

    att = predict_bag(load_model(ckpt).model, slide.features).mean_attention
    row = next(r for r in s["slides"] if r["slide_id"] == "slide_03")
    assert row["auc_mean"] == pytest.approx(roc_auc_score(mask, att))
    assert row["n_tumour"] == int(mask.sum())
    rows = list(csv.DictReader((tmp_path / "loc" / "localisation.csv").open()))
    assert len(rows) == len(tumour)
    assert "AUC" in capsys.readouterr().out


def test_trained_checkpoints_find_the_tumour(cohort, acmil_ckpt, abmil_ckpt, tmp_path) -> None:
    for ckpt in (acmil_ckpt, abmil_ckpt):
        out = tmp_path / ckpt.stem
        assert (
            main(
                [
                    "--checkpoint",
                    str(ckpt),
                    "--features",
                    str(cohort.features),
                    "--masks",
                    str(cohort.masks),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        s = json.loads((out / "localisation.json").read_text())
        assert s["n_slides"] == 8
        assert s["mean_auc"] > 0.65, s  # weak supervision on 16 slides: clearly better than chance
    assert set(s["mean_auc_per_branch"]) == set()  # ABMIL: one branch, no per-branch columns
    acm = json.loads((tmp_path / "acmil" / "localisation.json").read_text())
    assert set(acm["mean_auc_per_branch"]) == {"branch0", "branch1", "branch2"}


def test_missing_masks_folder(cohort, acmil_ckpt, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="masks folder"):
        main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--masks",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path),
            ]
        )
