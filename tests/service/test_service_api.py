"""REST API against a trained checkpoint and real feature files (TestClient runs the lifespan)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from acmil.heatmap import colormap_lut

API = "/api/v1"


def test_health_and_model(client, service_data):
    health = client.get(f"{API}/health").json()
    assert health["status"] == "ok" and health["model_loaded"] and health["slides"] >= 4
    model = client.get(f"{API}/model").json()
    assert model["arch"] == "acmil" and model["n_branches"] == 3 and model["in_dim"] == 32
    assert model["class_names"] == ["normal", "tumour"]
    assert model["target_mpp"] == 0.5 and model["tile_size"] == 224
    assert model["checkpoint"] == service_data["checkpoint"].name


def test_slide_list_flags_bad_files_but_lists_everything(client):
    slides = {s["slide_id"]: s for s in client.get(f"{API}/slides").json()}
    assert {"synthetic_pos", "synthetic_neg", "broken", "wrong_dim"} <= set(slides)
    assert slides["synthetic_pos"]["n_tiles"] == 96 and slides["synthetic_pos"]["error"] is None
    assert slides["synthetic_pos"]["has_image"] is False
    assert "not a readable HDF5" in slides["broken"]["error"] and "/" not in slides["broken"]["error"].split(":")[0]
    assert "dim 16" in slides["wrong_dim"]["error"]


def test_prediction_finds_the_planted_tiles(client, service_data):
    pos = client.get(f"{API}/slides/synthetic_pos/prediction", params={"top_k": 5}).json()
    neg = client.get(f"{API}/slides/synthetic_neg/prediction").json()
    assert pos["predicted_class"] == "tumour" and neg["predicted_class"] == "normal"
    assert pos["probabilities"]["tumour"] > 0.5 and sum(pos["probabilities"].values()) == pytest.approx(1.0)
    assert len(pos["branch_probabilities"]) == 3
    top = pos["top_tiles"]
    assert [t["rank"] for t in top] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(top, top[1:], strict=False))
    planted = set(service_data["planted"]["synthetic_pos"].tolist())
    assert top[0]["index"] in planted
    assert (top[0]["x"], top[0]["y"]) == ((top[0]["index"] % 12) * 224, (top[0]["index"] // 12) * 224)
    assert 0 < pos["attention"]["entropy_ratio"] < 1 and pos["attention"]["top_k_mass"] > 5 / 96


def test_second_view_is_cached_and_a_rewritten_file_is_not(client, make_settings, scratch_features):
    from fastapi.testclient import TestClient

    from acmil.service.main import create_app
    from tests.helpers.bags import write_slide

    with TestClient(create_app(make_settings(features_dir=scratch_features))) as private:
        first = private.get(f"{API}/slides/synthetic_neg/prediction").json()
        second = private.get(f"{API}/slides/synthetic_neg/prediction").json()
        assert not first["cached"] and second["cached"]
        assert second["probabilities"] == first["probabilities"]
        feats = np.zeros((10, 32), dtype=np.float32)
        feats[3, :4] = 6.0  # different content under the same name
        write_slide(scratch_features / "synthetic_neg.h5", feats, np.arange(20).reshape(10, 2) * 224)
        third = private.get(f"{API}/slides/synthetic_neg/prediction").json()
        assert not third["cached"] and third["n_tiles"] == 10


def test_attention_json_mean_and_branch(client):
    mean = client.get(f"{API}/slides/synthetic_pos/attention").json()
    assert mean["branch"] == "mean" and mean["n_branches"] == 3 and len(mean["coords"]) == len(mean["scores"]) == 96
    assert sum(mean["scores"]) == pytest.approx(1.0, abs=1e-4)
    branches = [client.get(f"{API}/slides/synthetic_pos/attention", params={"branch": b}).json() for b in range(3)]
    assert np.allclose(np.mean([b["scores"] for b in branches], axis=0), mean["scores"], atol=1e-6)
    assert client.get(f"{API}/slides/synthetic_pos/attention", params={"branch": 7}).status_code == 422
    assert client.get(f"{API}/slides/synthetic_pos/attention", params={"branch": "x"}).status_code == 422


def test_heatmap_png_on_blank_canvas_with_options(client):
    r = client.get(
        f"{API}/slides/synthetic_pos/heatmap.png",
        params={"max_size": 300, "colormap": "viridis", "alpha": 1.0, "normalisation": "minmax", "smoothing": 0},
    )  # the default smooths (acmil.heatmap.DEFAULT_SMOOTHING)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert image.shape == (200, 300, 3)  # 12x8 tiles of 224 px, longest side 300
    colours = {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0)}
    lut = colormap_lut("viridis")
    assert tuple(lut[0]) in colours and tuple(lut[255]) in colours  # min-max spans the whole map
    ranked = client.get(f"{API}/slides/synthetic_pos/heatmap.png", params={"max_size": 300, "alpha": 1.0})
    ranked = np.asarray(Image.open(io.BytesIO(ranked.content)).convert("RGB"))
    assert len(np.unique(ranked.reshape(-1, 3), axis=0)) > 50  # rank spreads 96 tiles over the colours
    smooth = client.get(f"{API}/slides/synthetic_pos/heatmap.png", params={"max_size": 300, "smoothing": 1.5})
    assert smooth.status_code == 200 and smooth.content != r.content
    bad = client.get(f"{API}/slides/synthetic_pos/heatmap.png", params={"colormap": "nope"})
    assert bad.status_code == 422 and "unknown colormap" in bad.json()["detail"]
    assert client.get(f"{API}/slides/synthetic_pos/heatmap.png", params={"alpha": 3}).status_code == 422


def test_corrupt_and_mismatched_files_fail_for_that_slide_only(client):
    broken = client.get(f"{API}/slides/broken/prediction")
    assert broken.status_code == 422 and "broken.h5" in broken.json()["detail"]
    assert "/tmp" not in broken.json()["detail"]
    wrong = client.get(f"{API}/slides/wrong_dim/prediction")
    assert wrong.status_code == 422 and "in_dim 32" in wrong.json()["detail"]
    assert client.get(f"{API}/slides/synthetic_pos/prediction").status_code == 200


def test_a_broken_slide_image_leaves_the_prediction_working(client):
    meta = client.get(f"{API}/slides/bad_image").json()
    assert meta["has_image"] is False and "cannot open the slide image" in meta["image_error"]
    assert client.get(f"{API}/slides/bad_image/prediction").status_code == 200
    assert client.get(f"{API}/slides/bad_image/heatmap.png", params={"max_size": 64}).status_code == 200
    dzi = client.get(f"{API}/slides/bad_image/slide.dzi")
    assert dzi.status_code == 404 and "cannot open" in dzi.json()["detail"]


def test_overlay_deepzoom_without_a_slide_image(client):
    dzi = client.get(f"{API}/slides/synthetic_pos/attention.dzi")
    assert dzi.status_code == 200 and 'Width="2688"' in dzi.text and 'Height="1792"' in dzi.text
    meta = client.get(f"{API}/slides/synthetic_pos").json()
    assert meta["has_image"] is False and (meta["width"], meta["height"]) == (2688, 1792)
    assert meta["mpp"] == 0.5 and meta["n_tiles"] == 96 and meta["patch_size_level0"] == 224
    top = 12  # ceil(log2(2688)) = 12: level 12 is full resolution
    tile = client.get(f"{API}/slides/synthetic_pos/attention_files/{top}/0_0.png", params={"colormap": "magma"})
    assert tile.status_code == 200
    rgba = np.asarray(Image.open(io.BytesIO(tile.content)))
    assert rgba.shape == (255, 255, 4) and rgba[..., 3].min() == 255  # all tissue there
    assert client.get(f"{API}/slides/synthetic_pos/attention_files/{top}/99_0.png").status_code == 404
    assert client.get(f"{API}/slides/synthetic_pos/slide.dzi").status_code == 404  # no image
    assert client.get(f"{API}/slides/synthetic_pos/crop.jpg", params={"x": 0, "y": 0, "size": 224}).status_code == 404


def test_colormap_legend(client):
    strip = Image.open(io.BytesIO(client.get(f"{API}/colormap.png", params={"name": "viridis"}).content))
    assert strip.size == (256, 1)
    assert client.get(f"{API}/colormap.png", params={"name": "nope"}).status_code == 422


def test_openapi_documents_the_routes(client):
    paths = client.get(f"{API}/openapi.json").json()["paths"]
    for path in [
        "/api/v1/health",
        "/api/v1/model",
        "/api/v1/slides",
        "/api/v1/slides/{slide_id}",
        "/api/v1/slides/{slide_id}/prediction",
        "/api/v1/slides/{slide_id}/attention",
        "/api/v1/slides/{slide_id}/heatmap.png",
        "/api/v1/predict",
        "/api/v1/slides/{slide_id}/slide.dzi",
    ]:
        assert path in paths, path


def test_precompute_fills_the_cache_in_the_background(make_settings, scratch_features):
    import time

    from fastapi.testclient import TestClient

    from acmil.service.engine import fingerprint
    from acmil.service.main import create_app

    with TestClient(create_app(make_settings(features_dir=scratch_features, precompute=True))) as warm:
        deadline = time.monotonic() + 30
        # wait for this slide itself: the warm-up's order over the folder is not fixed
        neg = fingerprint(scratch_features / "synthetic_neg.h5")
        while warm.app.state.engine._predictions.get(neg) is None:
            assert time.monotonic() < deadline, "background precompute did not fill the cache"
            time.sleep(0.05)
        assert warm.get(f"{API}/slides/synthetic_neg/prediction").json()["cached"]
        assert warm.get(f"{API}/slides/broken/prediction").status_code == 422  # skipped, still fails alone
