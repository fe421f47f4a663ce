"""A feature file of one tile without ``patch_size_level0`` (issue 15): the real server (``acmil serve``, a
subprocess, httpx) predicts it, and refuses, naming the slide, to draw or place its attention: a guessed
tile size would put the tile in the wrong place."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from acmil.features import write_features
from tests.helpers.bags import grid_coords, make_bag, write_slide
from tests.helpers.server import wait_until_healthy

API = "/api/v1"
GEOMETRY_ROUTES = ("attention", "heatmap.png", "attention.dzi", "attention_files/0/0_0.png", "attention.geojson")


@pytest.fixture
def server(service_data, tmp_path):
    import socket

    features = tmp_path / "features"
    features.mkdir()
    rng = np.random.default_rng(5)
    one_tile = np.array([[448, 224]], dtype=np.int64)
    write_features(features / "lone.h5", make_bag(rng, False, 1)[0], one_tile, attrs={"slide_id": "lone"})
    write_features(  # the slide's size is known, the tile's is not
        features / "lone_sized.h5",
        make_bag(rng, False, 1)[0],
        one_tile,
        attrs={"slide_id": "lone_sized"},
        coord_attrs={"level0_width": 4000, "level0_height": 3000},
    )
    write_slide(features / "grid.h5", make_bag(rng, True, 24)[0], grid_coords(24, 6))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "acmil", "serve", "--checkpoint", str(service_data["checkpoint"])]
    command += ["--features", str(features), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base, log, 60)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_one_tile_of_unknown_size_is_predicted_but_not_drawn(server):
    with httpx.Client(base_url=server + API, timeout=30) as http:
        for slide in ("lone", "lone_sized"):
            prediction = http.get(f"/slides/{slide}/prediction")
            assert prediction.status_code == 200, prediction.text
            body = prediction.json()
            assert body["n_tiles"] == 1 and body["patch_size_level0"] is None
            assert sum(body["probabilities"].values()) == pytest.approx(1.0)
            assert body["top_tiles"] == [
                {"rank": 1, "index": 0, "x": 448, "y": 224, "size": None, "score": pytest.approx(1.0)}
            ]
            for route in GEOMETRY_ROUTES:
                refused = http.get(f"/slides/{slide}/{route}")
                assert refused.status_code == 422, (slide, route, refused.status_code)
                detail = refused.json()["detail"]
                assert f"slide {slide!r}" in detail and "patch size unknown" in detail, (route, detail)

        meta = {slide: http.get(f"/slides/{slide}").json() for slide in ("lone", "lone_sized")}
        assert meta["lone"]["patch_size_level0"] is None
        assert (meta["lone"]["width"], meta["lone"]["height"]) == (None, None)  # no image, no attributes
        assert (meta["lone_sized"]["width"], meta["lone_sized"]["height"]) == (4000, 3000)

        # a slide with a known tile size on the same server is drawn as before
        assert http.get("/slides/grid/prediction").json()["patch_size_level0"] == 224
        for route in GEOMETRY_ROUTES:
            assert http.get(f"/slides/grid/{route}").status_code == 200, route


@pytest.mark.browser
@pytest.mark.slow
def test_the_viewer_shows_the_prediction_and_says_why_there_is_no_heatmap(server):
    from pathlib import Path

    from acmil import viewer_assets as assets

    chromium_path = Path("/usr/bin/chromium")
    if not chromium_path.is_file():
        pytest.skip("Debian chromium not installed (apt-get install chromium); the browser test needs it")
    try:
        assets.ensure_assets()
    except assets.AssetsMissing as err:
        pytest.fail(f"the viewer cannot get OpenSeadragon here: {err}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"{server}/#slide=lone")
            page.wait_for_function("document.body.dataset.state === 'ready'", timeout=30_000)
            assert page.text_content("#predicted-class") in ("normal", "tumour")
            assert "Patch size unknown" in page.text_content("#status")
            assert page.evaluate("acmil.viewer.world.getItemCount()") == 0  # no overlay placed on a guess
            assert not problems, problems
        finally:
            browser.close()
