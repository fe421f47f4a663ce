"""``acmil serve`` with several checkpoints: an ensemble of two really trained models (two seeds).

Each member's own prediction is computed here without the service (acmil.inference.predict_bag on the
member's own checkpoint), so the service's averaged probabilities and per-model attention are checked
against something it did not compute.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from acmil.checkpoint import load_model, save_model
from acmil.features import read_features
from acmil.inference import predict_bag

API = "/api/v1"


@pytest.fixture(scope="module")
def ensemble_client(make_settings, service_data, second_checkpoint):
    from fastapi.testclient import TestClient

    from acmil.service.main import create_app

    settings = make_settings(checkpoint=[service_data["checkpoint"], second_checkpoint])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _own(checkpoint, features_path):
    """A member's own prediction of a feature file, computed outside the service."""
    loaded = load_model(checkpoint)
    return predict_bag(loaded.model, read_features(features_path).features, loaded.temperature)


def test_model_describes_the_ensemble(ensemble_client, service_data, second_checkpoint):
    model = ensemble_client.get(f"{API}/model").json()
    assert model["ensemble_size"] == 2
    assert [m["checkpoint"] for m in model["members"]] == [service_data["checkpoint"].name, second_checkpoint.name]
    assert all(m["arch"] == "acmil" and m["n_branches"] == 3 for m in model["members"])
    assert model["class_names"] == ["normal", "tumour"] and model["in_dim"] == 32
    assert model["encoder"]["encoder"] == "synthetic"  # the shared recipe


def test_single_model_is_an_ensemble_of_one(client):
    model = client.get(f"{API}/model").json()
    assert model["ensemble_size"] == 1 and len(model["members"]) == 1
    pred = client.get(f"{API}/slides/synthetic_pos/prediction").json()
    assert pred["model_probabilities"] is None and pred["attention_model"] == "mean"


def test_probabilities_are_the_mean_of_the_members_own(ensemble_client, service_data, second_checkpoint):
    h5 = service_data["features"] / "synthetic_pos.h5"
    own = [_own(service_data["checkpoint"], h5), _own(second_checkpoint, h5)]
    assert not np.allclose(own[0].probabilities, own[1].probabilities)  # two really different models
    pred = ensemble_client.get(f"{API}/slides/synthetic_pos/prediction").json()
    names = ["normal", "tumour"]
    got = np.array([pred["probabilities"][n] for n in names])
    np.testing.assert_allclose(got, np.mean([p.probabilities for p in own], axis=0), atol=1e-6)
    for member, mine in zip(pred["model_probabilities"], own, strict=True):
        np.testing.assert_allclose([member[n] for n in names], mine.probabilities, atol=1e-6)
    assert pred["predicted_class"] == names[int(got.argmax())] and pred["branch_probabilities"] is None


def test_attention_is_averaged_by_default_and_per_model_on_request(ensemble_client, service_data, second_checkpoint):
    h5 = service_data["features"] / "synthetic_pos.h5"
    own = [_own(service_data["checkpoint"], h5), _own(second_checkpoint, h5)]
    mean = ensemble_client.get(f"{API}/slides/synthetic_pos/attention").json()
    assert mean["model"] == "mean" and mean["n_models"] == 2
    np.testing.assert_allclose(mean["scores"], np.mean([p.mean_attention for p in own], axis=0), atol=1e-6)
    for k, mine in enumerate(own):
        member = ensemble_client.get(f"{API}/slides/synthetic_pos/attention", params={"model": k}).json()
        assert member["model"] == str(k) and member["n_branches"] == 3
        np.testing.assert_allclose(member["scores"], mine.mean_attention, atol=1e-6)
        branch = ensemble_client.get(f"{API}/slides/synthetic_pos/attention", params={"model": k, "branch": 2})
        np.testing.assert_allclose(branch.json()["scores"], mine.attention[2], atol=1e-6)
    assert not np.allclose(own[0].mean_attention, own[1].mean_attention)
    top = ensemble_client.get(f"{API}/slides/synthetic_pos/prediction", params={"model": 1, "top_k": 3}).json()
    assert top["attention_model"] == "1"
    assert [t["index"] for t in top["top_tiles"]] == list(np.argsort(-own[1].mean_attention, kind="stable")[:3])


def test_bad_model_or_branch_without_model_is_a_clear_422(ensemble_client, client):
    for params, words in [
        ({"model": 2}, "model must be in 0..1"),
        ({"model": "x"}, "model must be 'mean' or an ensemble member index"),
        ({"branch": 1}, "needs model=k"),
    ]:
        answer = ensemble_client.get(f"{API}/slides/synthetic_pos/attention", params=params)
        assert answer.status_code == 422 and words in answer.json()["detail"], (params, answer.text)
    single = client.get(f"{API}/slides/synthetic_pos/attention", params={"model": 1})
    assert single.status_code == 422 and "model must be in 0..0" in single.json()["detail"]


def test_heatmap_and_overlay_of_a_member_are_that_models_own(ensemble_client, client):
    """Member 0 is the single-model service's checkpoint: its heatmap must be the very same picture."""
    params = {"max_size": 256, "smoothing": 0}
    own = client.get(f"{API}/slides/synthetic_pos/heatmap.png", params=params).content
    member0 = ensemble_client.get(f"{API}/slides/synthetic_pos/heatmap.png", params={**params, "model": 0}).content
    member1 = ensemble_client.get(f"{API}/slides/synthetic_pos/heatmap.png", params={**params, "model": 1}).content
    mean = ensemble_client.get(f"{API}/slides/synthetic_pos/heatmap.png", params=params).content
    assert member0 == own and member1 != own and mean not in (member0, member1)
    dzi = ensemble_client.get(f"{API}/slides/synthetic_pos/attention.dzi", params={"model": 1})
    assert dzi.status_code == 200 and b"Image" in dzi.content
    tile = f"{API}/slides/synthetic_pos/attention_files/0/0_0.png"
    assert ensemble_client.get(tile, params={"model": 0}).content == client.get(tile).content


def test_attention_geojson_carries_each_models_attention(ensemble_client, service_data, second_checkpoint):
    h5 = service_data["features"] / "synthetic_pos.h5"
    own = [_own(service_data["checkpoint"], h5), _own(second_checkpoint, h5)]
    tiles = ensemble_client.get(f"{API}/slides/synthetic_pos/attention.geojson").json()["features"]
    got = np.array([[f["properties"]["measurements"][f"attention_model_{k}"] for f in tiles] for k in (0, 1)])
    np.testing.assert_allclose(got, [p.mean_attention for p in own], atol=1e-6)
    mean = [f["properties"]["measurements"]["attention"] for f in tiles]
    np.testing.assert_allclose(mean, got.mean(axis=0), atol=1e-6)
    one = ensemble_client.get(f"{API}/slides/synthetic_pos/attention.geojson", params={"model": 1}).json()
    measurements = one["features"][0]["properties"]["measurements"]
    assert "attention_model_0" not in measurements
    assert measurements["attention_branch_2"] == pytest.approx(float(own[1].attention[2, 0]), abs=1e-6)


def test_a_cv_folder_serves_its_folds(make_settings, service_data, second_checkpoint, tmp_path):
    from fastapi.testclient import TestClient

    from acmil.service.main import create_app

    for k, ckpt in enumerate([service_data["checkpoint"], second_checkpoint]):
        (tmp_path / "cv" / f"fold_{k}" / "checkpoints").mkdir(parents=True)
        shutil.copyfile(ckpt, tmp_path / "cv" / f"fold_{k}" / "checkpoints" / "best.ckpt")
    with TestClient(create_app(make_settings(checkpoint=tmp_path / "cv"))) as cv:
        model = cv.get(f"{API}/model").json()
        assert model["ensemble_size"] == 2 and [m["checkpoint"] for m in model["members"]] == ["best.ckpt"] * 2


def _mismatched(service_data, path):
    """The first checkpoint's model, saved with its class names in the other order."""
    loaded = load_model(service_data["checkpoint"])
    card = dataclasses.replace(loaded.card, class_names=list(reversed(loaded.card.class_names)))
    return save_model(path, loaded.model, card)


def test_checkpoints_of_other_classes_refuse_to_start_naming_both(capsys, service_data, tmp_path):
    from acmil.cli import main as acmil_main

    other = _mismatched(service_data, tmp_path / "other_classes.ckpt")
    argv = ["serve", "--checkpoint", str(service_data["checkpoint"]), "--checkpoint", str(other)]
    assert acmil_main([*argv, "--features", str(service_data["features"])]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("acmil serve: cannot start: these checkpoints cannot be averaged") and "\n" not in err
    assert "other_classes.ckpt" in err and service_data["checkpoint"].name in err and "class names" in err


def test_the_checkpoint_flag_repeats_and_the_config_file_takes_a_list(service_data, second_checkpoint, tmp_path):
    from acmil.service.cli import build_parser, settings_from_args

    a, b = service_data["checkpoint"], second_checkpoint
    features = str(service_data["features"])
    settings = settings_from_args(
        build_parser().parse_args(["--checkpoint", str(a), "--checkpoint", str(b), "--features", features])
    )
    assert settings.checkpoint == [a, b]
    config = tmp_path / "serve.yaml"
    config.write_text(f"checkpoint: [{a}, {b}]\nfeatures: {features}\nport: 8123\n")
    assert settings_from_args(build_parser().parse_args(["--config", str(config)])).checkpoint == [a, b]
    missing = build_parser().parse_args(
        ["--checkpoint", str(a), "--checkpoint", str(tmp_path / "no.ckpt"), "--features", features]
    )
    with pytest.raises(FileNotFoundError, match="no.ckpt: checkpoint not found"):
        settings_from_args(missing)


def test_checkpoints_travel_to_uvicorn_workers_through_the_environment(service_data, second_checkpoint, monkeypatch):
    """``--workers 2`` hands the settings over as ACMIL_* variables: the list must come back whole."""
    from acmil.service.cli import _env
    from acmil.service.config import Settings

    paths = [service_data["checkpoint"], second_checkpoint]
    monkeypatch.setenv("ACMIL_CHECKPOINT", _env(paths))
    monkeypatch.setenv("ACMIL_FEATURES_DIR", str(service_data["features"]))
    assert Settings().checkpoint == paths
    monkeypatch.setenv("ACMIL_CHECKPOINT", str(paths[0]))  # one path, as before
    assert Settings().checkpoint == paths[:1]
