"""``POST /predict`` with crafted files: refused on their metadata, before any data is read (issue 9).

The real-server memory budget under three such uploads at once is in test_service_hostile_server.py.
"""

from __future__ import annotations

import io
import time

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from acmil.service.main import create_app

API = "/api/v1"
DIM = 32  # the test checkpoint's in_dim


def h5_bytes(build) -> bytes:
    """An in-memory HDF5 file made by ``build(h5)``."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        build(h5)
    return buffer.getvalue()


def good(h5, n: int = 6, feats=None, coords=None) -> h5py.Dataset:
    h5["features"] = np.ones((n, DIM), "float32") if feats is None else feats
    h5["coords"] = np.arange(2 * n).reshape(n, 2) * 224 if coords is None else coords
    return h5["coords"]


def upload(client, content: bytes, name: str = "x.h5"):
    return client.post(f"{API}/predict", files={"file": (name, content)})


@pytest.fixture(scope="module")
def tight(make_settings):
    """The app with a 16 MiB decode limit and one upload slot that is not waited for long."""
    settings = make_settings(max_upload_feature_bytes=16 * 2**20, max_concurrent_uploads=1, upload_slot_wait_s=0.2)
    with TestClient(create_app(settings)) as client:
        yield client


def test_unwritten_dataset_declaring_gigabytes_is_refused_before_reading(tight):
    def build(h5):
        h5.create_dataset("features", (1_000_000, DIM), "f4", chunks=(1024, DIM))  # no data: 128 MB of fill
        h5.create_dataset("coords", (1_000_000, 2), "i8", chunks=(1024, 2))

    content = h5_bytes(build)
    assert len(content) < 10_000
    start = time.perf_counter()
    response = upload(tight, content)
    assert response.status_code == 422
    assert "bytes as float32, more than the 16777216 allowed" in response.json()["detail"]
    assert time.perf_counter() - start < 5  # a hang bound: the refusal comes before 128 MB of fill is read


@pytest.mark.parametrize(
    "shape, chunks, expect",
    [
        ((100, 10_000_000), (1, 1_000_000), "feature dim 10000000 does not match the model's in_dim 32"),
        ((1, 10**12), (1, 1_000_000), "feature dim 1000000000000"),
    ],
)
def test_absurd_widths_are_refused_before_reading(client, shape, chunks, expect):
    def build(h5):
        h5.create_dataset("features", shape, "f4", chunks=chunks)
        h5.create_dataset("coords", (shape[0], 2), "i8")

    start = time.perf_counter()
    response = upload(client, h5_bytes(build))
    assert response.status_code == 422 and expect in response.json()["detail"], response.text
    assert time.perf_counter() - start < 5  # a hang bound: reading 4 GB (or 4 TB) of declared fill would not end


def test_coords_longer_than_the_features_are_refused_before_reading(client):
    def build(h5):
        h5["features"] = np.ones((1, DIM), "float32")
        h5.create_dataset("coords", (2_000_000_000, 2), "i8", chunks=(4096, 2))

    response = upload(client, h5_bytes(build))
    assert response.status_code == 422
    assert "'coords' shape (2000000000, 2) does not match 1" in response.json()["detail"]


def test_a_huge_stored_chunk_is_refused(client):
    def build(h5):  # one chunk of 40,000 x 32 x 8 = 10 MB would be fine; make it 4,000,000 rows (1 GB)
        h5.create_dataset("features", (10, DIM), "f8", chunks=(4_000_000, DIM), maxshape=(None, DIM))
        h5["coords"] = np.zeros((10, 2), "int64")

    response = upload(client, h5_bytes(build))
    assert response.status_code == 422 and "stored in chunks of 1024000000 bytes" in response.json()["detail"]


def test_gzip_compressed_features_are_read_in_blocks_and_predicted(client):
    feats = np.random.default_rng(0).normal(size=(5000, DIM)).astype("float64")

    def build(h5):
        h5.create_dataset("features", data=feats, chunks=(256, DIM), compression="gzip")
        h5.create_dataset("coords", data=np.arange(10_000).reshape(5000, 2), compression="gzip")

    response = upload(client, h5_bytes(build))
    assert response.status_code == 200 and response.json()["n_tiles"] == 5000


def test_uploads_beyond_the_decoding_slots_get_503(tight):
    content = h5_bytes(good)
    slots = tight.app.state.engine.upload_slots
    with slots.hold():  # another upload is being decoded
        busy = upload(tight, content)
    assert busy.status_code == 503 and "server busy" in busy.json()["detail"] and busy.headers["Retry-After"]
    assert upload(tight, content).status_code == 200  # the slot is free again


def _bad_utf8_slide_id(h5):
    good(h5)
    h5.attrs.create("slide_id", b"\xff\xfe bad", dtype=h5py.string_dtype())


def _coord_attr(name, value):
    def build(h5):
        good(h5).attrs[name] = value

    return build


def _features_group(h5):
    h5.create_group("features")
    h5["coords"] = np.zeros((3, 2))


CRAFTED = {
    "features is a group": (_features_group, "'/features' is a group, not a dataset"),
    "slide_id not UTF-8": (_bad_utf8_slide_id, "'slide_id' is not valid UTF-8"),
    "patch size text": (_coord_attr("patch_size_level0", "abc"), "'patch_size_level0' must be a number of pixels"),
    "patch size NaN": (_coord_attr("patch_size_level0", np.nan), "got nan"),
    "patch size 1e300": (_coord_attr("patch_size_level0", 1e300), "got 1e+300"),
    "patch size negative": (_coord_attr("patch_size_level0", -5), "got -5"),
    "level0_width text": (_coord_attr("level0_width", "x"), "'level0_width' must be a number of pixels"),
    "complex features": (lambda h5: good(h5, feats=np.ones((6, DIM), "complex64")), "dtype complex64"),
    "bool features": (lambda h5: good(h5, feats=np.ones((6, DIM), bool)), "dtype bool"),
    "int8 features": (lambda h5: good(h5, feats=np.ones((6, DIM), "int8")), "dtype int8"),
    "NaN coords": (lambda h5: good(h5, coords=np.full((6, 2), np.nan)), "6 coords rows are NaN"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_uploads_are_422_with_a_clear_message(client, case):
    build, expect = CRAFTED[case]
    response = upload(client, h5_bytes(build), name="crafted.h5")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert expect in detail and detail.startswith("crafted.h5: ") and "/tmp" not in detail


def test_a_300_character_file_name_is_fine(client):
    response = upload(client, h5_bytes(good), name="a" * 300 + ".h5")
    assert response.status_code == 200, response.text
    response = upload(client, h5_bytes(lambda h5: good(h5, feats=np.ones((6, 8), "float32"))), name="b" * 300 + ".h5")
    assert response.status_code == 422 and "feature dim 8" in response.json()["detail"]


def test_a_huge_attribute_is_refused_unread(client):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver="latest") as h5:  # dense attribute storage allows big attributes
        good(h5)
        h5.attrs["tissue_params"] = np.zeros(1_000_000)
    response = upload(client, buffer.getvalue())
    assert response.status_code == 422
    assert "attribute 'tissue_params' of '/' is larger than" in response.json()["detail"]
