"""The viewer's optional annotations layer in a real headless Chromium, against ``acmil serve --annotations``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acmil import viewer_assets as assets
from tests.helpers.server import wait_until_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
POS = "synthetic_pos"  # 2688 x 1792 level-0 px, no slide image
SETTLED = """() => { const v = acmil.viewer.viewport;
    return Math.abs(v.getZoom(true) - v.getZoom(false)) < 1e-9
        && v.getCenter(true).distanceTo(v.getCenter(false)) < 1e-9; }"""


def _feature(ring: list, name: str, color: list[int]) -> dict:
    return {
        "type": "Feature",
        "id": "0c6f9a57-7f38-4c1e-8d0e-2a4b6c8d0e1f",
        "geometry": {"type": "Polygon", "coordinates": ring},
        "properties": {"objectType": "annotation", "classification": {"name": name, "color": color}},
    }


@pytest.fixture(scope="module")
def server(service_data, tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium not installed (apt-get install chromium); the browser test needs it")
    try:  # what `acmil serve` does on first use: node_modules, else the user cache, else one download
        assets.ensure_assets()
    except assets.AssetsMissing as err:
        pytest.fail(f"the viewer cannot get OpenSeadragon here: {err}")
    import socket

    folder = tmp_path_factory.mktemp("viewer_annotations")
    tumour = [[[0, 0], [1000, 0], [1000, 600], [0, 600], [0, 0]]]
    ring = [
        [[1400, 200], [2400, 200], [2400, 1200], [1400, 1200], [1400, 200]],
        [[1700, 500], [2100, 500], [2100, 900], [1700, 900], [1700, 500]],
    ]  # with a hole
    (folder / f"{POS}.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [_feature(tumour, "Tumor", [200, 0, 0]), _feature(ring, "Stroma", [0, 150, 0])],
            }
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = folder / "server.log"
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
        str(folder),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base, log, 60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.problems = problems
        page.goto(f"{server}/#slide={POS}")
        yield page
        browser.close()


def _box(page, selector: str) -> dict:
    return page.evaluate(f"""() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();
        const o = acmil.viewer.element.getBoundingClientRect();
        return {{x0: r.left - o.left, y0: r.top - o.top, x1: r.right - o.left, y1: r.bottom - o.top}}; }}""")


def _expected(page, x0: float, y0: float, x1: float, y1: float) -> dict:
    return page.evaluate(f"""() => {{ const v = acmil.viewer.viewport, w = acmil.state.meta.width;
        const a = v.pixelFromPoint(new OpenSeadragon.Point({x0} / w, {y0} / w), true);
        const b = v.pixelFromPoint(new OpenSeadragon.Point({x1} / w, {y1} / w), true);
        return {{x0: a.x, y0: a.y, x1: b.x, y1: b.y}}; }}""")


def _close(got: dict, want: dict, tol: float = 2.5) -> bool:  # the stroke adds a pixel on each side
    return all(abs(got[k] - want[k]) <= tol for k in got)


def test_annotations_layer_lines_up_with_the_slide_and_can_be_hidden(page):
    page.wait_for_function(
        f"acmil.state.slide === '{POS}' && document.body.dataset.annotations === '2'", timeout=60_000
    )
    page.wait_for_function(SETTLED)
    paths = page.locator("#annotations-layer path")
    assert paths.count() == 2
    assert paths.nth(0).get_attribute("stroke") == "rgb(200,0,0)"
    assert paths.nth(1).get_attribute("fill-rule") == "evenodd"
    assert "2 objects (Tumor, Stroma)" in page.inner_text("#annotations-info")
    assert page.locator("#annotations").is_visible()
    tumour = '#annotations-layer path[data-classification="Tumor"]'
    assert _close(_box(page, tumour), _expected(page, 0, 0, 1000, 600))

    # Zoom in: the layer follows the viewport.
    page.evaluate("acmil.viewer.viewport.zoomBy(2.5, new OpenSeadragon.Point(0.2, 0.1), true)")
    page.wait_for_function(SETTLED)
    page.wait_for_timeout(100)
    assert _close(_box(page, tumour), _expected(page, 0, 0, 1000, 600))
    # The hole is a hole: the point at its centre is not inside the Stroma path's fill.
    inside_hole = page.evaluate("""() => { const p = document.querySelector(
        '#annotations-layer path[data-classification="Stroma"]');  // its own coordinates are level-0 px
        return [p.isPointInFill(new DOMPoint(1900, 700)), p.isPointInFill(new DOMPoint(1500, 300))]; }""")
    assert inside_hole == [False, True]

    page.uncheck("#annotations-toggle")
    assert not page.locator("#annotations-layer").is_visible()
    page.check("#annotations-toggle")
    assert page.locator("#annotations-layer").is_visible()

    # A slide without annotations: nothing drawn, the switch says so, and no error surfaces.
    page.select_option("#slide-select", "synthetic_neg")
    page.wait_for_function(
        "acmil.state.slide === 'synthetic_neg' && document.body.dataset.annotations === '0'", timeout=60_000
    )
    assert paths.count() == 0 and page.is_disabled("#annotations-toggle")
    assert page.inner_text("#annotations-info") == "none for this slide"
    assert page.problems == []  # no request for a file that does not exist
