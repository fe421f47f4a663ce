"""Fixtures of the service tests: the trained checkpoint, feature folders, real slides, the app."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from acmil.features import write_features
from tests.helpers import SHARED_SLIDES as SHARED
from tests.helpers.bags import (
    CMU,
    LIVE_KEY,
    PATCH,
    cmu_tissue_coords,
    grid_coords,
    make_bag,
    train_checkpoint,
    write_slide,
)
from tests.helpers.server import wait_until_healthy


@pytest.fixture(scope="session")
def service_data(tmp_path_factory) -> dict:
    """Folders and checkpoint for the app; real slides are linked in when ../shared is present."""
    root = tmp_path_factory.mktemp("service")
    features, slides = root / "features", root / "slides"
    features.mkdir()
    slides.mkdir()
    checkpoint = train_checkpoint(root / "model.ckpt")
    rng = np.random.default_rng(42)
    planted = {}
    for name, positive in [("synthetic_pos", True), ("synthetic_neg", False)]:
        feats, rows = make_bag(rng, positive, 96)
        write_slide(features / f"{name}.h5", feats, grid_coords(96, 12), size=(12 * PATCH, 8 * PATCH))
        planted[name] = rows
    (slides / "bad_image.svs").write_bytes(b"II*\x00 not really a slide")  # its image is broken, not its features
    write_slide(features / "bad_image.h5", make_bag(rng, False, 10)[0], grid_coords(10, 5))
    write_slide(features / "Biopsy 7 (ü).h5", make_bag(rng, False, 8)[0], grid_coords(8, 4))  # spaces, unicode
    (features / "broken.h5").write_bytes(b"this is not an HDF5 file at all" * 10)
    feats, _ = make_bag(rng, False, 20)
    write_features(features / "wrong_dim.h5", feats[:, :16], grid_coords(20, 5))
    data = {"root": root, "features": features, "slides": slides, "checkpoint": checkpoint, "planted": planted}
    if (SHARED / f"{CMU}.svs").is_file():
        os.symlink(SHARED / f"{CMU}.svs", slides / f"{CMU}.svs")  # linked, never copied
        coords = cmu_tissue_coords(SHARED / f"{CMU}.svs")
        feats, rows = make_bag(rng, True, len(coords))
        write_slide(features / f"{CMU}.h5", feats, coords)
        planted[CMU] = rows
        os.symlink(SHARED / "kidney-48-5.tif", slides / "kidney-48-5.tif")  # not a WSI: open_slide -> PIL
        write_slide(features / "kidney-48-5.h5", make_bag(rng, False, 12)[0], grid_coords(12, 6))
    return data


@pytest.fixture(scope="session")
def make_settings(service_data):
    from acmil.service.config import Settings

    def make(**overrides) -> Settings:
        values = dict(
            checkpoint=service_data["checkpoint"],
            features_dir=service_data["features"],
            slides_dir=service_data["slides"],
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def client(make_settings):
    """A TestClient of the app with default settings (no API key), lifespan run once per session."""
    from fastapi.testclient import TestClient

    from acmil.service.main import create_app

    with TestClient(create_app(make_settings())) as test_client:
        yield test_client


@pytest.fixture
def scratch_features(service_data, tmp_path) -> Path:
    """A private copy of the generated feature files, for tests that modify them."""
    target = tmp_path / "features"
    shutil.copytree(service_data["features"], target, symlinks=True)
    return target


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(service_data, checkpoints: list[Path]):
    """``acmil serve`` of ``checkpoints`` in a subprocess on a free loopback port, with an API key; yields its
    base URL."""
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "ACMIL_TEST_KEY": LIVE_KEY}
    log = service_data["root"] / f"server-{port}.log"
    command = [sys.executable, "-m", "acmil", "serve"]
    for checkpoint in checkpoints:
        command += ["--checkpoint", str(checkpoint)]
    command += [
        "--features",
        str(service_data["features"]),
        "--slides",
        str(service_data["slides"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key-env",
        "ACMIL_TEST_KEY",
        "--log-level",
        "warning",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base, log, 60, key=LIVE_KEY)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def live_server(service_data):
    """``acmil serve`` in a subprocess on a free loopback port, with an API key; yields its base URL."""
    yield from _serve(service_data, [service_data["checkpoint"]])


@pytest.fixture(scope="session")
def second_checkpoint(service_data) -> Path:
    """A second model of the service tests' recipe, trained with another seed (an ensemble's second member)."""
    return train_checkpoint(service_data["root"] / "model_seed1.ckpt", seed=1)


@pytest.fixture(scope="session")
def live_ensemble_server(service_data, second_checkpoint):
    """Like ``live_server``, serving the ensemble of the two checkpoints."""
    yield from _serve(service_data, [service_data["checkpoint"], second_checkpoint])
