"""Bad input and hostile requests: traversal, API key, uploads, CORS."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from acmil.service.main import create_app

API = "/api/v1"


@pytest.mark.parametrize(
    "slide_id",
    [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "..",
        "..%5Cbroken",
        "%252e%252e%252fbroken",
        "%2Fetc%2Fpasswd",
        "synthetic_pos%00",
        "synthetic_pos.h5",
        "SYNTHETIC_POS",
        "no_such_slide",
    ],
)
def test_traversal_and_unknown_ids_are_404(client, slide_id):
    for suffix in ("", "/prediction", "/attention", "/heatmap.png", "/attention.dzi"):
        response = client.get(f"{API}/slides/{slide_id}{suffix}")
        assert response.status_code == 404, (slide_id, suffix, response.status_code)
        assert "root:" not in response.text


def test_ids_with_spaces_and_unicode_work_when_encoded(client):
    from urllib.parse import quote

    ids = [s["slide_id"] for s in client.get(f"{API}/slides").json()]
    assert "Biopsy 7 (ü)" in ids
    response = client.get(f"{API}/slides/{quote('Biopsy 7 (ü)')}/prediction")
    assert response.status_code == 200 and response.json()["slide_id"] == "Biopsy 7 (ü)"


def test_tile_names_cannot_escape(client):
    for tile in ("..%2F..%2Fbroken.h5", "0_0.jpeg%2F..", "0_0.exe", "-1_0.png", "0_0"):
        assert client.get(f"{API}/slides/synthetic_pos/attention_files/12/{tile}").status_code in (404, 422)


@pytest.fixture(scope="module")
def keyed(make_settings):
    with TestClient(create_app(make_settings(api_key="s3cret-key"))) as keyed_client:
        yield keyed_client


@pytest.mark.parametrize(
    "path",
    [
        f"{API}/health",
        f"{API}/slides",
        "/",
        "/static/viewer.js",
        f"{API}/openapi.json",
        f"{API}/docs",
        f"{API}/slides/synthetic_pos/heatmap.png",
    ],
)
def test_api_key_is_required_on_every_route(keyed, path):
    assert keyed.get(path).status_code == 401
    assert keyed.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert keyed.get(path, headers={"X-API-Key": "s3cret-key"}).status_code in (200, 503)


def test_browser_gets_a_cookie_from_the_key_in_the_url(keyed):
    keyed.cookies.clear()
    response = keyed.get("/?api_key=s3cret-key", follow_redirects=False)
    assert response.status_code == 303 and "httponly" in response.headers["set-cookie"].lower()
    assert keyed.get(f"{API}/health").status_code == 200  # the cookie now rides along
    keyed.cookies.clear()
    assert keyed.get("/?api_key=nope", follow_redirects=False).status_code == 401


def _h5_bytes(features: np.ndarray, coords: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["features"] = features
        h5["coords"] = coords
    return buffer.getvalue()


def test_upload_gives_the_same_prediction_as_the_served_file(client, service_data):
    content = (service_data["features"] / "synthetic_pos.h5").read_bytes()
    uploaded = client.post(f"{API}/predict", files={"file": ("my slide.h5", content)})
    assert uploaded.status_code == 200, uploaded.text
    body = uploaded.json()
    served = client.get(f"{API}/slides/synthetic_pos/prediction").json()
    assert body["predicted_class"] == served["predicted_class"]
    assert body["probabilities"] == pytest.approx(served["probabilities"], abs=1e-6)
    assert len(body["scores"]) == len(body["coords"]) == 96 and not body["cached"]
    clam = _h5_bytes(np.random.default_rng(0).normal(size=(7, 32)).astype("float32"), np.zeros((7, 2), "int64"))
    assert client.post(f"{API}/predict", files={"file": ("clam.h5", clam)}).json()["n_tiles"] == 7


def test_upload_rejects_non_hdf5_and_wrong_dim(client):
    text = client.post(f"{API}/predict", files={"file": ("notes.h5", b"hello, not hdf5")})
    assert text.status_code == 422 and "not a readable HDF5" in text.json()["detail"]
    assert "notes.h5" in text.json()["detail"] and "/tmp" not in text.json()["detail"]
    wrong = _h5_bytes(np.ones((5, 8), "float32"), np.zeros((5, 2), "int64"))
    response = client.post(f"{API}/predict", files={"file": ("wrong.h5", wrong)})
    assert response.status_code == 422 and "feature dim 8" in response.json()["detail"]
    nan = _h5_bytes(np.full((5, 32), np.nan, "float32"), np.zeros((5, 2), "int64"))
    assert client.post(f"{API}/predict", files={"file": ("nan.h5", nan)}).status_code == 422
    assert client.post(f"{API}/predict").status_code == 422  # no file at all


def test_upload_that_points_outside_itself_is_refused(client, tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(np.arange(5 * 32, dtype="float32").tobytes())
    linked, external = tmp_path / "linked.h5", tmp_path / "external.h5"
    with h5py.File(linked, "w") as h5:
        h5["features"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/features")
        h5["coords"] = np.zeros((5, 2), "int64")
    with h5py.File(external, "w") as h5:
        h5.create_dataset("features", shape=(5, 32), dtype="float32", external=[(str(outside), 0, 5 * 32 * 4)])
        h5["coords"] = np.zeros((5, 2), "int64")
    for path, reason in [(linked, "external link"), (external, "outside the file")]:
        response = client.post(f"{API}/predict", files={"file": (path.name, path.read_bytes())})
        assert response.status_code == 422 and reason in response.json()["detail"], response.text


def test_upload_declaring_too_many_tiles_is_refused(make_settings):
    content = _h5_bytes(np.zeros((50, 32), "float32"), np.zeros((50, 2), "int64"))
    with TestClient(create_app(make_settings(max_upload_tiles=40))) as limited:
        response = limited.post(f"{API}/predict", files={"file": ("many.h5", content)})
    assert response.status_code == 422 and "50 tiles" in response.json()["detail"]


def test_upload_size_limit_is_413(make_settings):
    big = _h5_bytes(np.zeros((400, 32), "float32"), np.zeros((400, 2), "int64"))  # ~60 KB
    with TestClient(create_app(make_settings(max_upload_bytes=20_000))) as small:
        assert small.post(f"{API}/predict", files={"file": ("big.h5", big)}).status_code == 413

        def chunks():  # no Content-Length: the limit applies while streaming
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        response = small.post(
            f"{API}/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"}
        )
        assert response.status_code == 413
        assert small.get(f"{API}/health").status_code == 200


def test_cors_is_off_by_default_and_configurable(client, make_settings):
    origin = {"Origin": "http://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get(f"{API}/health", headers=origin).headers
    with TestClient(create_app(make_settings(cors_origins=["http://elsewhere.example"], api_key="k"))) as cors:
        preflight = cors.options(
            f"{API}/health",
            headers={**origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-API-Key"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://elsewhere.example"
        assert (
            cors.get(f"{API}/health", headers={**origin, "X-API-Key": "k"}).headers["access-control-allow-origin"]
            == "http://elsewhere.example"
        )
