"""GeoJSON routes for QuPath: attention per tile, and annotations served from ``--annotations DIR``."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from acmil.features import read_features
from acmil.geojson import tile_corners, validate_geojson
from tests.helpers.bags import PATCH
from tests.helpers.server import wait_until_healthy

API = "/api/v1"
POS = "synthetic_pos"  # 96 tiles on a 12 x 8 grid of 224 px


def _annotation(ring: list, name: str | None, color: list[int] | None = None) -> dict:
    """An annotation as QuPath 0.4+ exports it."""
    props: dict = {"objectType": "annotation"}
    if name:
        props["classification"] = {"name": name, "color": color or [200, 0, 0]}
    return {
        "type": "Feature",
        "id": "a3c1f1de-2b44-4f9b-8f0e-5b1f7e3c2a10",
        "geometry": {"type": "Polygon", "coordinates": ring},
        "properties": props,
    }


@pytest.fixture(scope="module")
def annotations_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotations")
    tumour = [[[0, 0], [1000, 0], [1000, 600], [0, 600], [0, 0]]]
    bowtie = [[[1200, 0], [1600, 400], [1600, 0], [1200, 400], [1200, 0]]]  # self-intersecting
    beyond = [[[2500, 1500], [3000, 1500], [3000, 2000], [2500, 2000], [2500, 1500]]]  # slide is 2688 x 1792
    (folder / f"{POS}.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    _annotation(tumour, "Tumor"),
                    _annotation(bowtie, "Necrosis", [50, 50, 50]),
                    _annotation(beyond, None),
                ],
            }
        )
    )
    (folder / "synthetic_neg.geojson").write_bytes(b"\x89PNG\r\n\x1a\n not GeoJSON at all")
    (folder / "Biopsy 7 (ü).json").write_text(json.dumps([_annotation(tumour, "Stroma")]))  # a bare list
    return folder


@pytest.fixture(scope="module")
def annotated_client(make_settings, annotations_dir):
    from fastapi.testclient import TestClient

    from acmil.service.main import create_app

    with TestClient(create_app(make_settings(annotations_dir=annotations_dir))) as test_client:
        yield test_client


def test_attention_geojson_is_the_feature_file_tiles_with_their_attention(client, service_data):
    response = client.get(f"{API}/slides/{POS}/attention.geojson", params={"top_k": 5})
    assert response.status_code == 200 and response.headers["content-type"] == "application/geo+json"
    assert f'filename="{POS}_attention.geojson"' in response.headers["content-disposition"]
    model = validate_geojson(response.json())
    feats = read_features(service_data["features"] / f"{POS}.h5")
    corners, sides = tile_corners(model)
    np.testing.assert_array_equal(corners, feats.coords)
    assert set(sides) == {PATCH}
    scores = client.get(f"{API}/slides/{POS}/attention").json()["scores"]
    measured = [f.properties.measurements for f in model.features]
    np.testing.assert_allclose([m["attention"] for m in measured], scores, rtol=1e-6)
    assert {"attention_branch_0", "attention_branch_1", "attention_branch_2", "attention_rank"} <= set(measured[0])
    top = [f for f in model.features if f.properties.classification is not None]
    assert len(top) == 5 and {f.properties.classification.name for f in top} == {"Top attention"}
    assert sorted(f.properties.measurements["attention_rank"] for f in top) == [1, 2, 3, 4, 5]
    assert all(f.properties.objectType == "detection" for f in model.features)

    legacy = client.get(f"{API}/slides/{POS}/attention.geojson", params={"legacy": True, "object_type": "tile"})
    validate_geojson(legacy.json(), legacy=True)
    assert legacy.json()["features"][0]["properties"]["object_type"] == "tile"


def test_attention_geojson_bad_requests(client):
    unicode_id = "Biopsy 7 (ü)"
    response = client.get(f"{API}/slides/{unicode_id}/attention.geojson")
    assert (
        response.status_code == 200
        and "filename*=UTF-8''Biopsy%207%20%28%C3%BC%29" in response.headers["content-disposition"]
    )
    assert client.get(f"{API}/slides/nope/attention.geojson").status_code == 404
    broken = client.get(f"{API}/slides/broken/attention.geojson")
    assert broken.status_code == 422 and "broken.h5" in broken.json()["detail"]
    assert client.get(f"{API}/slides/{POS}/attention.geojson", params={"top_k": -1}).status_code == 422
    assert client.get(f"{API}/slides/{POS}/attention.geojson", params={"object_type": "cell"}).status_code == 422


def test_annotations_need_the_folder(client):
    response = client.get(f"{API}/slides/{POS}/annotations.geojson")
    assert response.status_code == 404 and "--annotations" in response.json()["detail"]
    assert client.get(f"{API}/annotations").json() == {"enabled": False, "slide_ids": []}


def test_annotations_are_served_repaired_and_clipped(annotated_client, annotations_dir):
    index = annotated_client.get(f"{API}/annotations").json()
    assert index["enabled"] and sorted(index["slide_ids"]) == sorted(["Biopsy 7 (ü)", POS, "synthetic_neg"])
    response = annotated_client.get(f"{API}/slides/{POS}/annotations.geojson")
    assert response.status_code == 200 and response.headers["content-type"] == "application/geo+json"
    model = validate_geojson(response.json())
    names = [f.properties.classification.name if f.properties.classification else None for f in model.features]
    assert names == ["Tumor", "Necrosis", None]
    warnings = json.loads(response.headers["x-annotation-warnings"])
    assert any("Necrosis" in w and "make_valid" in w for w in warnings)
    assert any("outside the slide" in w and "clipped" in w for w in warnings)
    assert not any(str(annotations_dir) in w for w in warnings)  # file names only, never server folders
    clipped = model.features[2].geometry.coordinates[0]
    assert max(x for x, _ in clipped) == 2688 and max(y for _, y in clipped) == 1792

    bare = annotated_client.get(f"{API}/slides/Biopsy 7 (ü)/annotations.geojson")  # a bare list, .json
    assert bare.status_code == 200 and bare.json()["features"][0]["properties"]["classification"]["name"] == "Stroma"
    bad = annotated_client.get(f"{API}/slides/synthetic_neg/annotations.geojson")
    assert bad.status_code == 422 and "synthetic_neg.geojson: not a GeoJSON file" in bad.json()["detail"]
    assert str(annotations_dir) not in bad.json()["detail"]
    missing = annotated_client.get(f"{API}/slides/bad_image/annotations.geojson")
    assert missing.status_code == 404 and "no annotations file" in missing.json()["detail"]


def test_acmil_serve_annotations_flag_over_http(service_data, annotations_dir, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "acmil",
        "serve",
        "--checkpoint",
        str(service_data["checkpoint"]),
        "--features",
        str(service_data["features"]),
        "--annotations",
        str(annotations_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}{API}"
    try:
        wait_until_healthy(process, base.removesuffix(API), log, 60)
        response = httpx.get(f"{base}/slides/{POS}/annotations.geojson", timeout=30)
        assert response.status_code == 200 and len(response.json()["features"]) == 3
        attention = httpx.get(f"{base}/slides/{POS}/attention.geojson", timeout=30)
        assert attention.status_code == 200 and len(attention.json()["features"]) == 96
    finally:
        process.terminate()
        process.wait(timeout=15)
    bad = subprocess.run([*command[:-4], "--annotations", str(tmp_path / "none")], capture_output=True, text=True)
    assert bad.returncode == 1 and "annotations folder not found" in bad.stderr
