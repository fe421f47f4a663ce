"""The model carries its preprocessing: the recipe from feature files, checked across a cohort, in the card."""

from __future__ import annotations

import csv

import h5py
import pytest

from acmil.features import read_meta
from acmil.recipe import missing_fields, recipe_from_file
from tests.helpers.slides import FAST


def test_recipe_from_preprocessed_file_is_complete(recipe_run):
    recipe = recipe_run["recipe"]
    assert missing_fields(recipe) == []
    assert recipe["encoder"] == "resnet18" and recipe["encoder_weights"] == "random"
    assert recipe["tile_size"] == 64 and recipe["mpp_target"] == 2.0 and recipe["overlap"] == 0
    assert recipe["feature_dim"] == 512 and recipe["transform"]["resize"] is None
    assert recipe["tissue_params"]["seg_mpp"] == 4.0 and len(recipe["recipe_hash"]) == 16


def test_mixed_recipes_refused_with_counts(recipe_run, tmp_path):
    from acmil.training.cohort import DataValidationError, scan_cohort

    features = tmp_path / "features"
    features.mkdir()
    for name in ("a", "b", "c"):
        target = features / f"{name}.h5"
        target.write_bytes(recipe_run["h5"].read_bytes())
    with h5py.File(features / "c.h5", "r+") as f:  # one slide tiled at another size
        f.attrs["tiling_params"] = f.attrs["tiling_params"].replace('"tile_size": 64', '"tile_size": 128')
        f["coords"].attrs["patch_size"] = 128
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        csv.writer(fh).writerows([["slide_id", "label"], ["a", "normal"], ["b", "tumour"], ["c", "tumour"]])
    with pytest.raises(DataValidationError) as info:
        scan_cohort(features, labels)
    message = str(info.value)
    assert "different recipes" in message and "2 file(s)" in message and "1 file(s)" in message
    assert "tile 128" in message and "tile 64" in message
    (features / "c.h5").unlink()
    labels.write_text("slide_id,label\na,normal\nb,tumour\n")
    cohort = scan_cohort(features, labels)
    assert cohort.encoder["tile_size"] == 64 and cohort.encoder == recipe_from_file(features / "a.h5")


def _reference_state(d_feat: int) -> dict:
    """The tensor names and shapes of a reference ACMIL_GA checkpoint (2 branches, 2 classes)."""
    import torch

    inner, attn, m, c = 16, 8, 2, 2
    sd = {
        "dimreduction.fc1.weight": torch.randn(inner, d_feat),
        "attention.attention_V.0.weight": torch.randn(attn, inner),
        "attention.attention_V.0.bias": torch.zeros(attn),
        "attention.attention_U.0.weight": torch.randn(attn, inner),
        "attention.attention_U.0.bias": torch.zeros(attn),
        "attention.attention_weights.weight": torch.randn(m, attn),
        "attention.attention_weights.bias": torch.zeros(m),
        "Slide_classifier.fc.weight": torch.randn(c, inner),
        "Slide_classifier.fc.bias": torch.zeros(c),
    }
    for i in range(m):
        sd[f"classifier.{i}.fc.weight"], sd[f"classifier.{i}.fc.bias"] = torch.randn(c, inner), torch.zeros(c)
    return sd


def test_import_checkpoint_recipe_from(recipe_run, tmp_path, capsys):
    import torch

    from acmil.checkpoint import load_model
    from acmil.cli import main

    torch.save({"model": _reference_state(512)}, tmp_path / "ref.pth")
    assert (
        main(
            [
                "import-checkpoint",
                str(tmp_path / "ref.pth"),
                "--out",
                str(tmp_path / "imp.ckpt"),
                "--recipe-from",
                str(recipe_run["h5"]),
            ]
        )
        == 0
    )
    card = load_model(tmp_path / "imp.ckpt").card
    assert card.encoder == recipe_run["recipe"]
    torch.save({"model": _reference_state(48)}, tmp_path / "ref48.pth")  # features of another width: refused
    assert (
        main(
            [
                "import-checkpoint",
                str(tmp_path / "ref48.pth"),
                "--out",
                str(tmp_path / "x.ckpt"),
                "--recipe-from",
                str(recipe_run["h5"]),
            ]
        )
        == 1
    )
    assert "512-d but the model takes 48-d" in capsys.readouterr().err


def test_preprocess_slide_matches_acmil_preprocess(recipe_run, tmp_path):
    """The API with the card's recipe gives the very features acmil preprocess gave."""
    import numpy as np

    from acmil.features import read_features
    from acmil.preprocessing.api import preprocess_slide

    stages = []
    path = preprocess_slide(
        recipe_run["slide"], recipe_run["recipe"], tmp_path / "out", progress=lambda s, k, n: stages.append((s, k, n))
    )
    a, b = read_features(path), read_features(recipe_run["h5"])
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-5)
    names = [s for s, _, _ in stages]
    assert names[:2] == ["reading", "segmenting"] and "encoding" in names and names[-1] == "written"
    assert stages[-2][1] == stages[-2][2] == a.n_patches
    assert read_meta(path).attrs["encoder"] == "resnet18"
    assert FAST  # same settings as the fixture


def test_incomplete_recipe_says_what_is_missing(tmp_path, fresh_slide):
    from acmil.preprocessing.api import RecipeError, preprocess_slide

    with pytest.raises(RecipeError, match=r"lacks \['encoder_weights'.*import-checkpoint --recipe-from"):
        preprocess_slide(fresh_slide, {"encoder": "synthetic", "mpp_target": 0.5}, tmp_path)
