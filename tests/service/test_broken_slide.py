"""A slide image that breaks (corrupt bytes, truncation) fails only its bad tiles, and heals when restored.

OpenSlide handles are unusable after a read error, so the service drops a failing handle and reopens the
file on the next request, and reopens it whenever its size or mtime change (issue 9, Medium 5).
"""

from __future__ import annotations

import os
import shutil

import pytest
from fastapi.testclient import TestClient

from acmil.service.main import create_app
from tests.helpers.bags import CMU

API = "/api/v1"


@pytest.fixture
def copied_slide(shared_slides, service_data, tmp_path):
    """A private copy of CMU-1-Small-Region.svs with its feature file, and an app serving them."""
    slides, features = tmp_path / "slides", tmp_path / "features"
    slides.mkdir()
    features.mkdir()
    shutil.copyfile(shared_slides / f"{CMU}.svs", slides / f"{CMU}.svs")
    shutil.copy(service_data["features"] / f"{CMU}.h5", features / f"{CMU}.h5")
    return slides / f"{CMU}.svs", features


def _diagonal(client, level: int = 12) -> list[tuple[str, int, bytes]]:
    dzi = client.get(f"{API}/slides/{CMU}/slide.dzi")
    assert dzi.status_code == 200
    answers = []
    for i in range(12):
        response = client.get(f"{API}/slides/{CMU}/slide_files/{level}/{i}_{i}.jpeg")
        if response.status_code == 404 and "invalid tile address" in response.text:
            break
        answers.append((f"{i}_{i}", response.status_code, response.content))
    return answers


def _touch_later(path, original_stat) -> None:
    """Give a rewritten file an mtime distinct from ``original_stat``'s, however coarse the clock."""
    os.utime(path, ns=(original_stat.st_atime_ns, original_stat.st_mtime_ns + 2_000_000_000))


def test_corrupt_tiles_fail_alone_and_the_restored_file_serves_again(copied_slide, make_settings):
    slide, features = copied_slide
    original = slide.read_bytes()
    settings = make_settings(features_dir=features, slides_dir=slide.parent, slide_cache_size=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        good = _diagonal(client)
        assert len(good) >= 5 and all(status == 200 for _, status, _ in good)
        before = slide.stat()
        with slide.open("r+b") as handle:
            handle.seek(500_000)
            handle.write(os.urandom(100_000))
        _touch_later(slide, before)
        broken = _diagonal(client)
        statuses = [status for _, status, _ in broken]
        assert 500 not in statuses, statuses
        assert 422 in statuses and 200 in statuses, statuses
        failed = next(i for i, (_, status, _) in enumerate(broken) if status == 422)
        response = client.get(f"{API}/slides/{CMU}/slide_files/12/{broken[failed][0]}.jpeg")
        detail = response.json()["detail"]
        assert response.status_code == 422 and f"slide {CMU!r}: cannot read this part of the slide image" in detail
        assert str(slide.parent) not in detail
        # Tiles that read fine on the damaged file still do after a failure (the handle is reopened).
        fine_after = [name for i, (name, status, _) in enumerate(broken) if status == 200 and i > failed]
        fine_before = [name for i, (name, status, _) in enumerate(broken) if status == 200 and i < failed]
        for name in fine_after + fine_before:
            assert client.get(f"{API}/slides/{CMU}/slide_files/12/{name}.jpeg").status_code == 200
        assert client.get(f"{API}/slides/{CMU}/prediction").status_code == 200
        slide.write_bytes(original)
        _touch_later(slide, slide.stat())
        assert _diagonal(client) == good


def test_a_slide_truncated_under_an_open_handle_recovers_when_restored(copied_slide, make_settings):
    slide, features = copied_slide
    original = slide.read_bytes()
    settings = make_settings(features_dir=features, slides_dir=slide.parent)
    with TestClient(create_app(settings)) as reference:
        good = _diagonal(reference)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get(f"{API}/slides/{CMU}/slide.dzi").status_code == 200  # open, but no tile read yet
        with slide.open("r+b") as handle:
            handle.truncate(len(original) // 3)
        for name, _, _ in good:
            response = client.get(f"{API}/slides/{CMU}/slide_files/12/{name}.jpeg")
            assert response.status_code in (200, 404, 422), (name, response.status_code, response.text)
            assert response.headers["content-type"].startswith(("image/", "application/json"))
        assert client.get(f"{API}/slides/{CMU}").status_code == 200
        slide.write_bytes(original)
        _touch_later(slide, slide.stat())
        assert _diagonal(client) == good


def test_evicted_handles_are_closed_once_unused(shared_slides, make_settings):
    import ctypes

    from acmil.service.registry import SlideEntry
    from acmil.service.slides import SlideImages

    images = SlideImages(make_settings(slide_cache_size=1))
    first = SlideEntry("a", shared_slides / "a.h5", shared_slides / f"{CMU}.svs")
    second = SlideEntry("b", shared_slides / "b.h5", shared_slides / "CMU-1-Small-Region.svs")
    with images._using(first) as held:
        other = SlideEntry("k", shared_slides / "k.h5", shared_slides / "kidney-48-5.tif")
        assert images.dimensions(other) is not None  # evicts ``first`` while it is being read
        assert held.retired and held.slide.dimensions  # ... but it is not closed under the reader
    assert held.users == 0
    with pytest.raises(ctypes.ArgumentError, match="closed slide object"):  # closed now that the read is over
        held.slide.read_region((0, 0), 0, (4, 4))
    assert images.tile(second, 12, 0, 0)[:2] == b"\xff\xd8"  # reopened: a JPEG
    images.close()
