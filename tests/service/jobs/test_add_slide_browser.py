"""The viewer's "Add slide" in a real headless Chromium against ``acmil serve``: upload with a progress bar,
the job's stages, the slide selected and shown when done, and a clear message when the file is no slide."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmil import viewer_assets as assets
from tests.helpers.server import KEY, start_server
from tests.helpers.slides import make_slide

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def test_add_slide_in_the_browser(recipe_run, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    try:  # what `acmil serve` does on first use: node_modules, else the user cache, else one download
        assets.ensure_assets()
    except assets.AssetsMissing as err:
        pytest.fail(f"the viewer cannot get OpenSeadragon here: {err}")
    sync_api = pytest.importorskip("playwright.sync_api")
    features = tmp_path / "features"
    features.mkdir()
    slide = make_slide(tmp_path / "in" / "browser_case.tif", seed=81, width=3072, height=2048)
    notes = tmp_path / "in" / "notes.tif"
    notes.write_bytes(b"II*\x00 a text file with a slide's name")
    server, base = start_server(recipe_run["checkpoint"], features, tmp_path / "jobs", tmp_path / "server.log")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/?api_key={KEY}")
            page.wait_for_selector("#add-slide-file")
            # a file that is no slide: refused with its name and the reason, shown as an alert
            page.set_input_files("#add-slide-file", str(notes))
            page.click("#add-slide-button")
            page.wait_for_function("document.querySelector('#add-slide').dataset.state === 'failed'", timeout=30_000)
            alert = page.text_content("#add-slide-status")
            assert "notes.tif" in alert and "not a slide" in alert
            assert page.get_attribute("#add-slide-status", "role") == "alert"
            # a real slide: progress, stages, then selected and shown
            page.set_input_files("#add-slide-file", str(slide))
            page.click("#add-slide-button")
            seen = set()
            for _ in range(600):
                seen.add(page.text_content("#add-slide-status"))
                if page.evaluate("document.querySelector('#add-slide').dataset.state") == "done":
                    break
                page.wait_for_timeout(100)
            page.wait_for_function("document.getElementById('slide-select').value === 'browser_case'", timeout=60_000)
            page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
            assert page.evaluate("document.getElementById('add-slide-progress').value") == 1
            assert any("browser_case:" in s for s in seen), seen
            assert "done" in page.text_content("#add-slide-status")
            assert page.text_content("#predicted-class").strip() in ("normal", "tumour")
            assert errors == []
            browser.close()
    finally:
        server.stop()
