"""QuPath in and out of ``acmil preprocess``: the QC GeoJSON (tissue with holes, the kept tile grid) and tile
selection by annotations (``--roi-classes``, ``--exclude-classes``), on real TIFFs read through OpenSlide."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from acmil.annotations import read_annotations, tile_coverage
from acmil.cli import main as acmil_main
from acmil.features import read_features, read_meta
from acmil.geojson import tile_corners, validate_geojson

SIZE = 2048  # level-0 px; at 0.5 µm/px and tiles of 64 px at 1 µm/px, a tile is 128 level-0 px
CENTRE, OUTER, INNER = 1024, 800, 260  # a ring of tissue: a hole in the middle


def _manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as f:
        return {r["slide_id"]: r for r in csv.DictReader(f)}


def _args(fast_args: list[str]) -> list[str]:
    args = list(fast_args)
    args[args.index("--target-mpp") + 1] = "1.0"
    return [*args, "--workers", "0"]


def _ring_slide(write_tiff, path: Path) -> Path:
    """Pink tissue in a ring (outer radius 800 px, hole of radius 260 px) on white glass."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(xx - CENTRE, yy - CENTRE)
    rgb = np.full((SIZE, SIZE, 3), 245, np.uint8)
    rgb[(r < OUTER) & (r > INNER)] = (215, 140, 190)
    return write_tiff(path, rgb, mpp=0.5)


def _square(x0: float, y0: float, x1: float, y1: float) -> list:
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def _qupath_feature(ring: list, name: str, color: list[int]) -> dict:
    """An annotation as QuPath 0.4+ exports it (File > Export objects as GeoJSON)."""
    return {
        "type": "Feature",
        "id": "0b8e4a4e-3c1a-4c1e-9a35-1f4c2b7d9e01",
        "geometry": {"type": "Polygon", "coordinates": ring},
        "properties": {"objectType": "annotation", "classification": {"name": name, "color": color}},
    }


@pytest.fixture(scope="module")
def ring_slides(tmp_path_factory, write_tiff) -> Path:
    folder = tmp_path_factory.mktemp("ring_slides")
    for sid in ("ring_a", "ring_b", "ring_c"):
        _ring_slide(write_tiff, folder / f"{sid}.tif")
    return folder


def test_qc_geojson_is_the_tissue_with_its_hole_and_exactly_the_feature_tiles(ring_slides, tmp_path, fast_args):
    slides = tmp_path / "in"
    slides.mkdir()
    (slides / "ring_a.tif").symlink_to(ring_slides / "ring_a.tif")
    out = tmp_path / "out"
    assert acmil_main(["preprocess", "--slides", str(slides), "--out", str(out), *_args(fast_args)]) == 0
    path = out / "qc" / "ring_a.geojson"
    model = validate_geojson(path)  # the schema of what we emit, and every polygon valid
    feats = read_features(out / "features" / "ring_a.h5")
    corners, sides = tile_corners(model)
    np.testing.assert_array_equal(corners, feats.coords)  # same tiles, same order
    assert set(sides) == {feats.coord_attrs["patch_size_level0"]}

    tissue = [f for f in model.features if f.properties.objectType == "annotation"]
    assert len(tissue) == 1 and tissue[0].properties.classification.name == "Tissue"
    geometry = tissue[0].geometry
    assert geometry.type == "Polygon" and len(geometry.coordinates) == 2  # the shell and the hole
    found = read_annotations(path, (SIZE, SIZE))
    ring = found.region(["Tissue"])
    assert ring.area == pytest.approx(np.pi * (OUTER**2 - INNER**2), rel=0.05)
    assert not ring.contains(__import__("shapely").Point(CENTRE, CENTRE))  # the hole is a hole
    mm2 = float(_manifest(out)["ring_a"]["tissue_mm2"])
    assert tissue[0].properties.measurements["area_mm2"] == pytest.approx(mm2, rel=0.05)
    # Re-imported, the tile objects are the feature file's tiles again (round trip).
    tiles = found.select(object_types=("tile",))
    assert len(tiles) == feats.n_patches
    assert [t.geometry.bounds[:2] for t in tiles] == [tuple(map(float, c)) for c in feats.coords]


def test_roi_and_excluded_classes_choose_the_tiles_and_are_recorded(ring_slides, tmp_path, fast_args, capsys):
    slides, notes = tmp_path / "in", tmp_path / "annotations"
    slides.mkdir()
    notes.mkdir()
    for sid in ("ring_a", "ring_b", "ring_c"):
        (slides / f"{sid}.tif").symlink_to(ring_slides / f"{sid}.tif")
    tumour, pen = _square(0, 0, 1024, SIZE), _square(300, 900, 420, 1000)  # left half; a pen mark in it
    collection = {
        "type": "FeatureCollection",
        "features": [
            _qupath_feature(tumour, "Tumor", [200, 0, 0]),
            _qupath_feature(pen, "Pen", [0, 0, 0]),
            _qupath_feature(_square(1500, 1500, 1600, 1600), "Stroma", [150, 200, 150]),
            _qupath_feature([[[1500, 100], [1600, 200], [1600, 100], [1500, 200], [1500, 100]]], "Artifact", [0, 0, 0]),
        ],
    }
    (notes / "ring_a.geojson").write_text(json.dumps(collection))
    (notes / "ring_b.geojson").write_text("{ this is not json")  # ring_c has no file at all
    out = tmp_path / "out"
    argv = [
        "preprocess",
        "--slides",
        str(slides),
        "--out",
        str(out),
        *_args(fast_args),
        "--annotations",
        str(notes),
        "--roi-classes",
        "tumor",
        "--exclude-classes",
        "Pen,Artifact",
    ]
    assert acmil_main(argv) == 1  # two slides failed, the batch went on
    rows = _manifest(out)
    assert rows["ring_a"]["status"] == "ok"
    assert rows["ring_b"]["status"] == "failed" and "ring_b.geojson" in rows["ring_b"]["error"]
    assert "not a GeoJSON file" in rows["ring_b"]["error"]
    assert rows["ring_c"]["status"] == "failed" and "no annotation file for slide 'ring_c'" in rows["ring_c"]["error"]
    err = capsys.readouterr().err
    assert "FAILED ring_b" in err
    assert "warning: ring_a: ring_a.geojson: feature #3 (Artifact): invalid Polygon (Self-intersection" in err

    feats = read_features(out / "features" / "ring_a.h5")
    patch = feats.coord_attrs["patch_size_level0"]
    found = read_annotations(notes / "ring_a.geojson", (SIZE, SIZE))
    inside = tile_coverage(feats.coords, patch, found.region(["Tumor"]))
    touches_pen = tile_coverage(feats.coords, patch, found.region(["Pen"]))
    assert (inside >= 0.5).all() and (touches_pen == 0).all() and feats.n_patches > 20
    record = json.loads(feats.attrs["annotations"])
    assert record["file"] == "ring_a.geojson" and record["roi_classes"] == ["tumor"]
    assert record["exclude_classes"] == ["Pen", "Artifact"] and record["n_tiles_kept"] == feats.n_patches
    assert record["n_excluded"] >= 1 and record["n_outside_roi"] > 10
    assert record["n_tiles_tissue"] == feats.n_patches + record["n_excluded"] + record["n_outside_roi"]
    assert len(record["sha256"]) == 64
    assert len(record["warnings"]) == 1 and "make_valid" in record["warnings"][0]
    # The QC GeoJSON shows the tiles actually kept.
    np.testing.assert_array_equal(tile_corners(validate_geojson(out / "qc" / "ring_a.geojson"))[0], feats.coords)

    # Resume: unchanged annotations skip the slide; edited annotations recompute it.
    digest = read_meta(out / "features" / "ring_a.h5").attrs["params_hash"]
    acmil_main(argv)
    assert _manifest(out)["ring_a"]["status"] == "skipped"
    collection["features"] = collection["features"][:1]  # the pen mark removed
    (notes / "ring_a.geojson").write_text(json.dumps(collection))
    acmil_main(argv)
    again = read_meta(out / "features" / "ring_a.h5")
    assert _manifest(out)["ring_a"]["status"] == "ok" and again.attrs["params_hash"] != digest
    assert again.n_patches == feats.n_patches + record["n_excluded"]


def test_exclusion_only_tiles_slides_without_a_file_and_options_are_checked(ring_slides, tmp_path, fast_args, capsys):
    slides, notes = tmp_path / "in", tmp_path / "annotations"
    slides.mkdir()
    notes.mkdir()
    (slides / "ring_c.tif").symlink_to(ring_slides / "ring_c.tif")
    out = tmp_path / "out"
    base = ["preprocess", "--slides", str(slides), "--out", str(out), *_args(fast_args)]
    assert acmil_main([*base, "--annotations", str(notes), "--exclude-classes", "Pen"]) == 0
    record = json.loads(read_meta(out / "features" / "ring_c.h5").attrs["annotations"])
    assert record["file"] is None and record["n_excluded"] == 0
    capsys.readouterr()
    assert acmil_main([*base, "--roi-classes", "Tumor"]) == 1
    assert "need --annotations" in capsys.readouterr().err
    assert acmil_main([*base, "--annotations", str(tmp_path / "nowhere"), "--roi-classes", "Tumor"]) == 1
    assert "annotations folder not found" in capsys.readouterr().err
