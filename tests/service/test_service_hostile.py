"""Crafted requests and broken files that used to answer 500 (issue 9, Low): each is now a clear 4xx/503."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from acmil.cli import main as acmil_main
from acmil.features import write_features
from acmil.service.main import create_app
from tests.helpers.bags import grid_coords, make_bag, write_slide

API = "/api/v1"


@pytest.mark.parametrize("branch", ["²", "①", "٣", "1²", " 1", "1\n", "99999999"])
def test_non_ascii_or_odd_branch_indices_are_422(client, branch):
    for suffix in ("attention", "heatmap.png", "attention.dzi", "attention_files/9/0_0.png"):
        response = client.get(f"{API}/slides/synthetic_pos/{suffix}", params={"branch": branch})
        assert response.status_code == 422, (branch, suffix, response.status_code)
        assert "branch" in response.text


@pytest.mark.parametrize("tile", ["٠_٠.png", "0_٠.png", "０_0.png", "0_0.png%0A"])
def test_unicode_digits_in_tile_names_are_not_read_as_numbers(client, tile):
    assert client.get(f"{API}/slides/synthetic_pos/attention_files/9/0_0.png").status_code == 200
    assert client.get(f"{API}/slides/synthetic_pos/attention_files/9/{tile}").status_code == 404


def test_a_served_file_with_bad_geometry_fails_for_that_slide_only(make_settings, scratch_features):
    rng = np.random.default_rng(3)
    feats = make_bag(rng, False, 12)[0]
    write_features(
        scratch_features / "bad_patch.h5", feats, grid_coords(12, 4), coord_attrs={"patch_size_level0": "abc"}
    )
    write_features(
        scratch_features / "bad_width.h5",
        feats,
        grid_coords(12, 4),
        coord_attrs={"patch_size_level0": 224, "level0_width": "x", "level0_height": 10},
    )
    with h5py.File(scratch_features / "grouped.h5", "w") as h5:
        h5.create_group("features")
    with TestClient(create_app(make_settings(features_dir=scratch_features))) as client:
        listed = {s["slide_id"]: s for s in client.get(f"{API}/slides").json()}
        assert "'patch_size_level0' must be a number of pixels" in listed["bad_patch"]["error"]
        assert "'level0_width' must be a number of pixels" in listed["bad_width"]["error"]
        assert "'/features' is a group, not a dataset" in listed["grouped"]["error"]
        assert client.get(f"{API}/slides/grouped/prediction").status_code == 422
        for slide in ("bad_patch", "bad_width"):
            for suffix in (
                "",
                "/prediction",
                "/attention",
                "/heatmap.png",
                "/attention.dzi",
                "/attention_files/9/0_0.png",
            ):
                response = client.get(f"{API}/slides/{slide}{suffix}")
                assert response.status_code == 422, (slide, suffix, response.text)
                assert "must be a number of pixels" in response.json()["detail"]
        assert client.get(f"{API}/slides/synthetic_pos/prediction").status_code == 200


def test_features_folder_renamed_while_serving(make_settings, scratch_features, monkeypatch):
    from acmil.service import registry

    monkeypatch.setattr(registry, "RESCAN_INTERVAL_S", 0.0)
    with TestClient(create_app(make_settings(features_dir=scratch_features))) as client:
        assert client.get(f"{API}/slides").status_code == 200
        moved = scratch_features.with_name("moved")
        scratch_features.rename(moved)
        for path in ("/slides", "/slides/no_such_slide", "/slides/synthetic_pos/prediction"):
            response = client.get(API + path)
            assert response.status_code in (404, 503), (path, response.status_code, response.text)
            assert "features folder is not available" in response.json()["detail"]
            assert str(moved.parent) not in response.text
        assert client.get(f"{API}/health").status_code == 200
        moved.rename(scratch_features)
        assert client.get(f"{API}/slides/synthetic_pos/prediction").status_code == 200


def test_image_errors_name_the_slide_not_the_server_path(client, service_data):
    slides = str(service_data["slides"])
    meta = client.get(f"{API}/slides/bad_image").json()
    assert meta["image_error"] and slides not in meta["image_error"] and "/" not in meta["image_error"]
    for path in ("slide.dzi", "slide_files/0/0_0.jpeg", "crop.jpg?x=0&y=0&size=10"):
        response = client.get(f"{API}/slides/bad_image/{path}")
        assert response.status_code == 404 and "slide 'bad_image'" in response.json()["detail"]
        assert slides not in response.text and str(service_data["root"]) not in response.text


@pytest.fixture(scope="module")
def keyed(make_settings):
    with TestClient(create_app(make_settings(api_key="s3cret-key"))) as keyed_client:
        yield keyed_client


def test_the_key_cookie_is_secure_over_https(keyed, make_settings):
    keyed.cookies.clear()
    plain = keyed.get("/?api_key=s3cret-key", follow_redirects=False)
    assert plain.status_code == 303 and "secure" not in plain.headers["set-cookie"].lower()
    keyed.cookies.clear()
    proxied = keyed.get("/?api_key=s3cret-key", follow_redirects=False, headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 303 and "; secure" in proxied.headers["set-cookie"].lower()
    with TestClient(create_app(make_settings(api_key="s3cret-key")), base_url="https://acmil.example") as https:
        direct = https.get("/?api_key=s3cret-key", follow_redirects=False)
        assert direct.status_code == 303 and "; secure" in direct.headers["set-cookie"].lower()


def test_api_key_in_the_query_is_redacted_in_log_records():
    import logging

    from acmil.service.security import RedactKeyFilter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/?x=1&api_key=s3cret-key&y=2", "1.1", 303),
        None,
    )
    RedactKeyFilter().filter(record)
    assert "s3cret-key" not in record.getMessage() and "api_key=***&y=2" in record.getMessage()


def test_bad_device_and_port_are_one_line_without_traceback(capsys, service_data):
    base = ["serve", "--checkpoint", str(service_data["checkpoint"]), "--features", str(service_data["features"])]
    assert acmil_main([*base, "--device", "bogus"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("acmil serve: cannot start:") and "bogus" in err and "\n" not in err
    assert acmil_main([*base, "--port", "99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "acmil serve: error: --port 99999: not a TCP port (0..65535)"


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"PK\x03\x04 random bytes"])
def test_an_unreadable_checkpoint_is_one_line_with_exit_3(capsys, service_data, tmp_path, content):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    assert acmil_main(["serve", "--checkpoint", str(bad), "--features", str(service_data["features"])]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("acmil serve: cannot start:") and "bad.ckpt" in err and "\n" not in err
    assert "Traceback" not in err


def test_a_feature_file_whose_features_is_a_group_is_listed_by_the_cohort_scan(tmp_path):
    """The shared reader: training's scan lists the bad file with the others instead of aborting."""
    from acmil.training.cohort import DataValidationError, scan_cohort

    rng = np.random.default_rng(0)
    features = tmp_path / "features"
    features.mkdir()
    for name in ("a", "b"):
        write_slide(features / f"{name}.h5", make_bag(rng, False, 8)[0], grid_coords(8, 4))
    with h5py.File(features / "grouped.h5", "w") as h5:
        h5.create_group("features")
        h5["coords"] = np.zeros((3, 2), "int64")
    shutil.copy(features / "a.h5", features / "c.h5")
    with h5py.File(features / "c.h5", "a") as h5:
        h5["coords"].attrs["patch_size_level0"] = "abc"
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\na,x\nb,y\ngrouped,x\nc,y\n")
    with pytest.raises(DataValidationError) as caught:
        scan_cohort(features, labels)
    problems = caught.value.problems
    assert any("grouped.h5" in p and "'/features' is a group, not a dataset" in p for p in problems), problems
    assert any("c.h5" in p and "'patch_size_level0'" in p for p in problems), problems
    assert len(problems) == 2
