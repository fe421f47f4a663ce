"""The viewer of an ensemble in a real headless Chromium (Playwright), against ``acmil serve`` given two
checkpoints: a model selector switches the overlay and the gallery between the mean and each member."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from acmil import viewer_assets as assets
from tests.helpers.bags import LIVE_KEY

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-sync"]
READY = "document.body.dataset.state === 'ready' && !!document.body.dataset.overlayLoaded"
ONE_LAYER = READY + " && acmil.viewer.world.getItemCount() === 1"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium not installed (apt-get install chromium); the browser test needs it")
    try:
        assets.ensure_assets()
    except assets.AssetsMissing as err:
        pytest.fail(f"the viewer cannot get OpenSeadragon here: {err}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def _open(browser, base: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{base}/?api_key={LIVE_KEY}#slide=synthetic_pos")
    page.wait_for_function(READY + " && acmil.state.slide === 'synthetic_pos'", timeout=60_000)
    return context, page, problems


def _top_tiles(base: str, model: str) -> list[int]:
    answer = httpx.get(
        f"{base}/api/v1/slides/synthetic_pos/prediction", params={"model": model}, headers={"X-API-Key": LIVE_KEY}
    )
    return [t["index"] for t in answer.json()["top_tiles"]]


def test_the_model_selector_shows_each_members_attention(browser, live_ensemble_server):
    base = live_ensemble_server
    context, page, problems = _open(browser, base)
    try:
        assert page.locator("#model-row").is_visible()
        options = page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)")
        assert options == ["mean", "0", "1"]
        assert "ensemble of 2" in page.inner_text("#model-info")
        assert page.locator("#branch-select").is_disabled()  # no branches in the members' mean
        url = "acmil.state.overlayItem.source.getTileUrl(0, 0, 0)"
        assert "model=" not in page.evaluate(url)
        gallery = "acmil.state.prediction.top_tiles.map(t => t.index)"
        assert page.evaluate(gallery) == _top_tiles(base, "mean")

        page.select_option("#model-select", "1")
        page.wait_for_function(ONE_LAYER + " && acmil.state.prediction.attention_model === '1'", timeout=30_000)
        page.wait_for_function(f"{url}.includes('model=1')", timeout=30_000)
        assert page.evaluate(gallery) == _top_tiles(base, "1") != _top_tiles(base, "mean")
        assert page.locator("#gallery button").count() == len(_top_tiles(base, "1"))
        assert page.inner_text("#model-choice-info").startswith("model 1 alone says")
        assert page.locator("#branch-select").is_enabled()
        page.select_option("#branch-select", "2")  # member 1's branch 2
        page.wait_for_function(ONE_LAYER + f" && {url}.includes('branch=2') && {url}.includes('model=1')")
        assert page.inner_text("#branch-info").startswith("branch 2 alone says")

        page.select_option("#model-select", "mean")
        page.wait_for_function(ONE_LAYER + " && acmil.state.prediction.attention_model === 'mean'", timeout=30_000)
        assert "model=" not in page.evaluate(url) and "branch=mean" in page.evaluate(url)
        assert page.locator("#branch-select").is_disabled() and page.inner_text("#model-choice-info") == ""
        assert not problems, problems
    finally:
        context.close()


def test_a_single_model_has_no_model_selector(browser, live_server):
    context, page, problems = _open(browser, live_server)
    try:
        assert page.locator("#model-row").is_hidden() and page.locator("#branch-select").is_enabled()
        assert not problems, problems
    finally:
        context.close()
