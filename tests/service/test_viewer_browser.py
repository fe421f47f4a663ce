"""The viewer in a real headless Chromium (Debian's build) driven by Playwright, against ``acmil serve``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acmil import viewer_assets as assets
from acmil.features import read_meta
from tests.helpers.bags import CMU, LIVE_KEY

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SETTLED = """() => { const v = acmil.viewer.viewport;  // the spring animation has come to rest
    return Math.abs(v.getZoom(true) - v.getZoom(false)) < 1e-9
        && v.getCenter(true).distanceTo(v.getCenter(false)) < 1e-9; }"""
DEFAULT_TOP_K = 12  # Settings.default_top_k
READY = "document.body.dataset.state === 'ready' && !!document.body.dataset.overlayLoaded"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium not installed (apt-get install chromium); the browser test needs it")
    try:  # what `acmil serve` does on first use: node_modules, else the user cache, else one download
        assets.ensure_assets()
    except assets.AssetsMissing as err:
        pytest.fail(f"the viewer cannot get OpenSeadragon here: {err}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.problems = problems
    page.goto(f"{live_server}/?api_key={LIVE_KEY}")  # sets the key cookie, redirects to /
    yield page
    context.close()


def _saturated(screenshot: bytes) -> float:
    """Share of strongly coloured pixels right of the sidebar (H&E and white are far less saturated)."""
    stage = np.asarray(Image.open(io.BytesIO(screenshot)).convert("RGB"))[:, 330:].astype(int)
    return float(((stage.max(axis=-1) - stage.min(axis=-1)) > 120).mean())


def _viewport(page) -> dict:
    return page.evaluate("""() => { const v = acmil.viewer.viewport; const c = v.getCenter(true);
        return {x: c.x, y: c.y, zoom: v.getZoom(true)}; }""")


def _layers(page) -> list[bool]:
    return page.evaluate("""() => { const w = acmil.viewer.world; const out = [];
        for (let i = 0; i < w.getItemCount(); i++) out.push(w.getItemAt(i).getFullyLoaded()); return out; }""")


def test_viewer_shows_slide_heatmap_prediction_and_gallery(page, service_data):
    has_slide = (service_data["features"] / f"{CMU}.h5").exists()
    page.wait_for_function(READY, timeout=60_000)  # the first slide of the list, whichever it is
    if has_slide:
        page.select_option("#slide-select", CMU)
        loaded = f" && acmil.state.slide === '{CMU}' && document.body.dataset.slideLoaded === '1'"
        page.wait_for_function(READY + loaded, timeout=60_000)
    assert _layers(page) == ([True, True] if has_slide else [True])  # slide + attention overlay
    assert page.inner_text("#predicted-class") in ("normal", "tumour")
    assert page.locator("#probabilities .prob").count() == 2
    # The gallery lists the shown slide's top-k tiles: k = 12 (the default) or all of them on a smaller slide;
    # which slide shows first depends on the folder (a fresh clone has no ../shared slides).
    shown = page.evaluate("acmil.state.slide")
    n_tiles = read_meta(service_data["features"] / f"{shown}.h5").n_patches
    gallery = page.locator("#gallery button")
    assert gallery.count() == min(DEFAULT_TOP_K, n_tiles) and n_tiles > 2
    if has_slide:
        page.wait_for_function(
            "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth)"
        )
        assert page.locator("#scalebar").is_visible() and "µm" in page.inner_text("#scalebar-label")
        ARTIFACTS.mkdir(exist_ok=True)
        home = page.screenshot(path=str(ARTIFACTS / "viewer-cmu-home.png"))  # the first view of a real H&E slide
        assert _saturated(home) > 0.001, "the default overlay draws nothing over the real slide"

    before = _viewport(page)
    tile = page.evaluate("acmil.state.prediction.top_tiles[2]")
    gallery.nth(2).click()
    page.wait_for_function("acmil.lastTile !== undefined")
    page.wait_for_function(SETTLED, timeout=20_000)
    after = _viewport(page)
    width = page.evaluate("acmil.state.meta.width")
    centre = ((tile["x"] + tile["size"] / 2) / width, (tile["y"] + tile["size"] / 2) / width)
    # The view fits the tile with two tiles' margin (5 tiles across its shorter side), centred on it: a zoom-in
    # on a slide larger than that (the fixture slides of a fresh clone are only 4 tiles wide).
    bounds = page.evaluate("(() => { const b = acmil.viewer.viewport.getBounds(true); return [b.width, b.height]; })()")
    assert min(bounds) == pytest.approx(5 * tile["size"] / width, rel=0.03)
    if width > 5 * tile["size"]:
        assert after["zoom"] > before["zoom"] * 1.5
    assert abs(after["x"] - centre[0]) < 0.02 and abs(after["y"] - centre[1]) < 0.02
    assert page.locator(".tile-highlight").count() == 1

    page.fill("#opacity", "80")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("acmil.state.overlayItem.getOpacity()") == pytest.approx(0.8)
    page.select_option("#cutoff-select", "0")  # every tile drawn: the zoomed-in view is all overlay
    page.wait_for_function(READY + " && !!document.body.dataset.overlayLoaded", timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    assert _saturated(page.screenshot(path=str(ARTIFACTS / "viewer.png"))) > 0.02, "no heatmap colours visible"
    assert not page.problems, page.problems


def test_viewer_without_a_slide_image_and_overlay_options(page):
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
    page.select_option("#slide-select", "synthetic_pos")
    page.wait_for_function(READY + " && acmil.state.slide === 'synthetic_pos'", timeout=60_000)
    assert _layers(page) == [True]  # the overlay alone, on a blank canvas
    assert page.locator("#no-image").is_visible()
    assert page.inner_text("#predicted-class") == "tumour"
    assert page.locator("#branch-select option").count() == 4  # mean + 3 branches
    page.select_option("#colormap-select", "viridis")
    page.wait_for_function(READY + " && acmil.viewer.world.getItemCount() === 1", timeout=30_000)
    page.select_option("#branch-select", "2")
    page.wait_for_function(READY + " && acmil.viewer.world.getItemCount() === 1", timeout=30_000)
    # The server sends the scaled score in grey; the page colours it (viridis here) and fades low scores.
    assert page.evaluate("acmil.state.overlayItem.source.getTileUrl(0, 0, 0)").endswith(
        "branch=2&colormap=gray&normalisation=log&smoothing=0.5"
    )
    assert page.inner_text("#branch-info").startswith("branch 2 alone says")
    page.select_option("#smooth-select", "0")
    page.wait_for_function(READY + " && acmil.viewer.world.getItemCount() === 1", timeout=30_000)
    assert "smoothing" not in page.evaluate("acmil.state.overlayItem.source.getTileUrl(0, 0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-no-image.png"))
    assert not page.problems, page.problems


def _drawn_share(page) -> float:
    """Share of the slide's area on screen that the overlay colours (the canvas is white without an image)."""
    page.wait_for_function(READY + " && acmil.viewer.world.getItemCount() === 1", timeout=30_000)
    page.wait_for_function(SETTLED, timeout=20_000)
    box = page.evaluate("""() => { const v = acmil.viewer.viewport, m = acmil.state.meta;
        const r = v.viewportToViewerElementRectangle(new OpenSeadragon.Rect(0, 0, 1, m.height / m.width));
        const o = document.getElementById('osd').getBoundingClientRect();
        acmil.viewer.navigator.element.style.display = 'none';
        return {x: o.left + r.x, y: o.top + r.y, width: r.width, height: r.height}; }""")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]) + 2, int(box["y"]) + 2
    region = shot[y0 : int(box["y"] + box["height"]) - 2, x0 : int(box["x"] + box["width"]) - 2]
    return float((region.min(axis=-1) < 235).mean())


def test_viewer_defaults_read_as_a_heatmap_and_every_option_switches(page, service_data):
    """Defaults = acmil heatmap's (the report's): log scaling, inferno, smoothing, low scores not drawn."""
    from acmil import heatmap

    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
    defaults = page.evaluate("""() => ['colormap-select', 'norm-select', 'smooth-select', 'cutoff-select']
        .map(id => document.getElementById(id).value)""")
    assert defaults == [
        heatmap.DEFAULT_CMAP,
        heatmap.DEFAULT_NORMALISATION,
        f"{heatmap.DEFAULT_SMOOTHING:g}",
        f"{heatmap.DEFAULT_TRANSPARENT_BELOW:g}",
    ]
    assert page.inner_text("#legend-text") == f"Colour = {heatmap.scaling_label()}."
    cohort = page.locator("#cohort-info")
    assert "synthetic" in cohort.inner_text() and "Trained on 40 slides" in cohort.inner_text()
    assert "synthetic" in cohort.get_attribute("class")

    page.select_option("#slide-select", "synthetic_pos")  # 96 tiles covering the whole blank canvas
    page.fill("#opacity", "100")
    page.dispatch_event("#opacity", "input")
    drawn = _drawn_share(page)
    # The few planted ("tumour") tiles are drawn, the rest of the slide stays quiet: not a mosaic of every tile.
    planted = service_data["planted"]["synthetic_pos"]
    assert 0.5 * len(planted) / 96 < drawn < 0.3, (drawn, len(planted))
    assert all(_drawn_at(page, 224 * (row % 12) + 112, 224 * (row // 12) + 112) for row in planted)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-defaults.png"))
    page.select_option("#cutoff-select", "0")
    assert "not drawn" not in page.inner_text("#legend-text")
    assert _drawn_share(page) > 0.95  # every tile drawn again
    page.select_option("#norm-select", "rank")
    page.wait_for_function(READY + " && acmil.viewer.world.getItemCount() === 1", timeout=30_000)
    assert "normalisation=rank" in page.evaluate("acmil.state.overlayItem.source.getTileUrl(0, 0, 0)")
    assert "rank within the slide" in page.inner_text("#legend-text")
    assert not page.problems, page.problems


def _drawn_at(page, x: int, y: int) -> bool:
    """Whether the overlay colours the screen pixel at level-0 (x, y) (no image: the canvas is white)."""
    point = page.evaluate(f"""() => {{ const w = acmil.state.meta.width;
        const p = acmil.viewer.viewport.pixelFromPoint(new OpenSeadragon.Point({x} / w, {y} / w), true);
        const o = document.getElementById('osd').getBoundingClientRect();
        return {{x: Math.round(o.left + p.x), y: Math.round(o.top + p.y)}}; }}""")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    return bool(shot[point["y"], point["x"]].min() < 235)
