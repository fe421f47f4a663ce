"""Serving refuses feature files whose provenance contradicts the model's recipe (issue 11), per slide, naming
both values; files that agree with it, or record nothing to compare, are served as before."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient

from acmil.features import write_features
from acmil.service.main import create_app
from tests.helpers.bags import PATCH, grid_coords, make_bag

API = "/api/v1"
# The service tests' checkpoint was trained on encoder "synthetic" at 0.5 µm/px (tests.helpers.bags.train_checkpoint).
OTHER = {"encoder": "vit_small_patch16_224", "mpp_target": 0.25}


def _write(path, attrs):
    feats = make_bag(np.random.default_rng(5), True, 16)[0]
    coord_attrs = {"patch_size_level0": PATCH, "patch_size": PATCH}
    return write_features(
        path, feats, grid_coords(16, 4), attrs={"slide_id": path.stem, **attrs}, coord_attrs=coord_attrs
    )


def test_a_file_of_another_recipe_is_refused_naming_both_values(make_settings, scratch_features):
    _write(scratch_features / "other_recipe.h5", OTHER)
    _write(scratch_features / "same_recipe.h5", {"encoder": "synthetic", "mpp_target": 0.5})
    with TestClient(create_app(make_settings(features_dir=scratch_features))) as client:
        listed = {s["slide_id"]: s for s in client.get(f"{API}/slides").json()}
        error = listed["other_recipe"]["error"]
        assert "encoder: model 'synthetic', file 'vit_small_patch16_224'" in error
        assert "mpp_target: model 0.5, file 0.25" in error
        assert listed["same_recipe"]["error"] is None
        response = client.get(f"{API}/slides/other_recipe/prediction")
        assert response.status_code == 422 and "another recipe" in response.json()["detail"]
        assert client.get(f"{API}/slides/same_recipe/prediction").status_code == 200
        assert client.get(f"{API}/slides/synthetic_pos/prediction").status_code == 200  # records no encoder


def test_an_upload_of_another_recipe_is_refused(client, tmp_path):
    path = _write(tmp_path / "upload.h5", OTHER)
    response = client.post(f"{API}/predict", files={"file": ("upload.h5", io.BytesIO(path.read_bytes()))})
    assert response.status_code == 422, response.text
    assert "encoder: model 'synthetic', file 'vit_small_patch16_224'" in response.json()["detail"]
