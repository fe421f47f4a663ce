"""DeepZoom, heatmaps and crops on real slides from ../shared/data/slides (skipped when absent)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers.bags import CMU, PATCH

API = "/api/v1"


@pytest.fixture(scope="module")
def cmu(shared_slides):
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    with openslide.OpenSlide(shared_slides / f"{CMU}.svs") as slide:
        yield slide, DeepZoomGenerator(slide, 254, 1, limit_bounds=False)


def _image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_metadata_of_a_real_slide(client, cmu):
    meta = client.get(f"{API}/slides/{CMU}").json()
    assert meta["has_image"] and (meta["width"], meta["height"]) == cmu[0].dimensions
    assert meta["mpp"] == pytest.approx(0.499) and meta["vendor"] == "aperio" and meta["level_count"] == 1
    assert meta["objective_power"] == 20 and meta["patch_size_level0"] == PATCH
    listed = {s["slide_id"]: s for s in client.get(f"{API}/slides").json()}
    assert listed[CMU]["has_image"] and listed[CMU]["error"] is None


def test_deepzoom_descriptor_and_tiles_match_openslide(client, cmu):
    _, dz = cmu
    assert client.get(f"{API}/slides/{CMU}/slide.dzi").text == dz.get_dzi("jpeg")
    top = dz.level_count - 1
    for col, row in [(0, 0), (3, 5), (dz.level_tiles[top][0] - 1, dz.level_tiles[top][1] - 1)]:
        served = _image(client.get(f"{API}/slides/{CMU}/slide_files/{top}/{col}_{row}.jpeg")).astype(float)
        buffer = io.BytesIO()
        dz.get_tile(top, (col, row)).convert("RGB").save(buffer, format="JPEG", quality=80)  # the service's quality
        expected = np.asarray(Image.open(buffer), dtype=float)
        assert served.shape == expected.shape
        assert np.abs(served - expected).mean() < 0.5  # the same pixels through the same encoder
    assert client.get(f"{API}/slides/{CMU}/slide_files/{top}/99_99.jpeg").status_code == 404
    assert client.get(f"{API}/slides/{CMU}/slide_files/{top + 1}/0_0.jpeg").status_code == 404


def test_overlay_tiles_line_up_with_slide_tiles(client, cmu):
    _, dz = cmu
    top = dz.level_count - 1
    attention = client.get(f"{API}/slides/{CMU}/attention").json()
    coords = np.asarray(attention["coords"])
    covered = {(int(x), int(y)) for x, y in coords}
    empty = next(
        (x, y) for y in range(0, 2967 - PATCH, PATCH) for x in range(0, 2220 - PATCH, PATCH) if (x, y) not in covered
    )
    for (x, y), tissue in [(tuple(coords[0]), True), (empty, False)]:
        col, row = x // 254, y // 254
        tile = _image(client.get(f"{API}/slides/{CMU}/attention_files/{top}/{col}_{row}.png"))
        assert tile.shape[:2] == dz.get_tile_dimensions(top, (col, row))[::-1]
        # the pixel at the patch's centre, in this tile's coordinates (tiles after the first start 1 px early)
        px = (x + PATCH // 2) - (col * 254 - (1 if col else 0))
        py = (y + PATCH // 2) - (row * 254 - (1 if row else 0))
        if 0 <= px < tile.shape[1] and 0 <= py < tile.shape[0]:
            assert (tile[py, px, 3] == 255) == tissue


def test_heatmap_over_the_thumbnail_keeps_the_background(client, cmu):
    slide, _ = cmu
    heat = _image(client.get(f"{API}/slides/{CMU}/heatmap.png", params={"max_size": 512, "alpha": 0.6}))
    assert heat.shape == (512, round(2220 * 512 / 2967), 3)
    thumb = slide.get_thumbnail((2048, 2048)).convert("RGB")
    background = np.asarray(thumb.resize((heat.shape[1], heat.shape[0]), Image.Resampling.BILINEAR))
    same = (heat == background).all(axis=-1)
    assert 0.3 < same.mean() < 0.95  # glass untouched, tissue coloured


def test_gallery_crop_is_the_slide_region(client, cmu):
    slide, _ = cmu
    tile = client.get(f"{API}/slides/{CMU}/prediction").json()["top_tiles"][0]
    crop = _image(
        client.get(
            f"{API}/slides/{CMU}/crop.jpg", params={"x": tile["x"], "y": tile["y"], "size": tile["size"], "out": 112}
        )
    )
    assert crop.shape == (112, 112, 3)
    region = slide.read_region((tile["x"], tile["y"]), 0, (tile["size"],) * 2).convert("RGB").resize((112, 112))
    assert np.abs(crop.astype(float) - np.asarray(region, dtype=float)).mean() < 8
    assert client.get(f"{API}/slides/{CMU}/crop.jpg", params={"x": 0, "y": 0, "size": 99999}).status_code == 422
    outside = client.get(f"{API}/slides/{CMU}/crop.jpg", params={"x": 10**19, "y": 0, "size": 224})
    assert outside.status_code == 404 and "outside the slide" in outside.json()["detail"]


def test_a_plain_tiff_opens_through_pil(client, shared_slides):
    meta = client.get(f"{API}/slides/kidney-48-5").json()
    assert meta["has_image"] and (meta["width"], meta["height"]) == (1493, 901) and meta["mpp"] == 0.5
    dzi = client.get(f"{API}/slides/kidney-48-5/slide.dzi")
    assert dzi.status_code == 200 and 'Width="1493"' in dzi.text
    assert _image(client.get(f"{API}/slides/kidney-48-5/slide_files/11/0_0.jpeg")).shape == (255, 255, 3)
