"""QuPath GeoJSON: what we write (schema, tile geometry, round trips), what QuPath writes (files built here from
its serialiser's documented forms, 0.2 to 0.5), bad files, and exact tile coverage from polygons."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from acmil.annotations import (
    AnnotationError,
    find_annotation_file,
    parse_geojson,
    read_annotations,
    tile_coverage,
    to_feature_collection,
)
from acmil.geojson import (
    attention_features,
    mask_polygons,
    tile_corners,
    tissue_features,
    validate_geojson,
    write_attention_geojson,
)

COORDS = np.array([[0, 0], [256, 0], [512, 0], [0, 256], [256, 256]], dtype=np.int64)
ATTENTION = np.array([[0.1, 0.4, 0.2, 0.2, 0.1], [0.3, 0.3, 0.1, 0.1, 0.2]])  # (M=2, N=5)


def _square(x0: float, y0: float, x1: float, y1: float) -> list:
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


# --- what we write --------------------------------------------------------------------------------------
def test_attention_tiles_are_the_coords_and_patch_size_with_measurements(tmp_path) -> None:
    path = write_attention_geojson(tmp_path / "s_attention.geojson", "s", COORDS, 256, ATTENTION, top_k=2)
    model = validate_geojson(path)
    assert len(model.features) == 5
    for (x, y), feature in zip(COORDS, model.features, strict=True):
        ring = feature.geometry.coordinates[0]
        assert {tuple(p) for p in ring} == {(x, y), (x + 256, y), (x + 256, y + 256), (x, y + 256)}
        assert ring[0] == ring[-1] and len(ring) == 5
    raw = json.loads(path.read_text())["features"][1]
    assert raw["geometry"]["coordinates"][0][0] == [512, 0]  # integers, exactly the feature file's
    m = raw["properties"]["measurements"]
    assert m == {
        "attention": pytest.approx(0.35),
        "attention_branch_0": 0.4,
        "attention_branch_1": 0.3,
        "attention_rank": 1,
    }
    assert raw["properties"]["objectType"] == "detection"
    assert raw["properties"]["classification"] == {"name": "Top attention", "color": [220, 20, 60]}
    ranks = [f.properties.measurements["attention_rank"] for f in model.features]
    assert sorted(ranks) == [1, 2, 3, 4, 5]
    classified = [f.properties.measurements["attention_rank"] for f in model.features if f.properties.classification]
    assert sorted(classified) == [1, 2]
    # ids are UUIDs fixed by slide and tile: a re-export replaces rather than duplicates objects in QuPath
    again = attention_features("s", COORDS, 256, ATTENTION)
    assert [f["id"] for f in again["features"]] == [str(f.id) for f in model.features]
    one_branch = attention_features("s", COORDS, 256, ATTENTION[0])
    assert set(one_branch["features"][0]["properties"]["measurements"]) == {"attention", "attention_rank"}


def test_legacy_form_for_qupath_0_3() -> None:
    legacy = attention_features("s", COORDS, 256, ATTENTION, top_k=1, legacy=True)
    validate_geojson(legacy, legacy=True)
    props = legacy["features"][1]["properties"]
    assert props["object_type"] == "detection" and props["isLocked"] is False
    assert props["measurements"][0] == {"name": "attention", "value": pytest.approx(0.35)}
    assert props["classification"] == {"name": "Top attention", "colorRGB": -2354116}  # 0xFFDC143C as int32
    with pytest.raises(ValueError, match="not QuPath GeoJSON"):
        validate_geojson(legacy)  # the modern schema refuses the old form: each file is checked as what it is


def test_schema_refuses_what_qupath_would_misread() -> None:
    good = attention_features("s", COORDS[:1], 256, ATTENTION[:, :1])
    bad_class = json.loads(json.dumps(good))
    bad_class["features"][0]["properties"]["classification"] = {"name": "Top", "color": [300, 0, 0]}
    open_ring = json.loads(json.dumps(good))
    open_ring["features"][0]["geometry"]["coordinates"][0].pop()
    typo = json.loads(json.dumps(good))
    typo["features"][0]["properties"]["objecttype"] = "detection"
    bowtie = json.loads(json.dumps(good))
    bowtie["features"][0]["geometry"]["coordinates"] = [[[0, 0], [9, 9], [9, 0], [0, 9], [0, 0]]]
    for broken, why in [(bad_class, "color"), (open_ring, "ring"), (typo, "objecttype"), (bowtie, "invalid")]:
        with pytest.raises(ValueError, match=why):
            validate_geojson(broken)
    with pytest.raises(ValueError, match="does not match 5 tiles"):
        attention_features("s", COORDS, 256, ATTENTION[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        attention_features("s", COORDS, 256, np.full(5, np.nan))


def test_mask_polygons_keep_holes_through_pixel_centres() -> None:
    mask = np.zeros((40, 50), bool)
    mask[5:35, 5:45] = True
    mask[15:25, 20:30] = False  # a hole
    mask[30:32, 10:12] = False  # a pinhole (2 x 2 px): left out
    mask[36:39, 46:49] = True  # a separate 3 x 3 piece
    mask[1, 1] = True  # a single pixel: left out
    polys = mask_polygons(mask, (500, 400))  # 10 level-0 px per mask px
    assert [len(p.interiors) for p in polys] == [1, 0]
    assert polys[0].bounds == (55.0, 55.0, 445.0, 345.0)  # through the centres of the edge pixels
    assert polys[0].area == pytest.approx((30 * 40 - 100) * 100, rel=0.08)
    assert polys[1].bounds == (465.0, 365.0, 485.0, 385.0)
    assert not polys[0].contains(shapely.Point(250, 200))  # the hole's centre
    assert all(p.is_valid for p in polys)
    assert mask_polygons(np.zeros((4, 4), bool), (40, 40)) == []
    necked = np.zeros((12, 12), bool)
    necked[1:5, 1:5] = necked[5:9, 5:9] = True  # two squares touching at a corner: repaired, still valid
    assert all(p.is_valid for p in mask_polygons(necked, (120, 120)))


def test_tissue_and_tiles_round_trip(tmp_path) -> None:
    mask = np.zeros((32, 32), bool)
    mask[4:28, 4:28] = True
    mask[12:18, 12:18] = False
    collection = tissue_features("s", mask, (1024, 1024), COORDS, 256, mpp=0.5, tissue_fraction=np.linspace(0.3, 1, 5))
    model = validate_geojson(collection)
    tissue = [f for f in model.features if f.properties.objectType == "annotation"]
    assert len(tissue) == 1 and len(tissue[0].geometry.coordinates) == 2  # shell + hole
    assert tissue[0].properties.classification.name == "Tissue"
    # the mask's area but for the half pixel inside its edges (on this 24 px square, 11 %)
    mask_mm2 = (24**2 - 36) * 32**2 * 0.25 / 1e6
    assert 0.85 * mask_mm2 < tissue[0].properties.measurements["area_mm2"] < mask_mm2
    corners, sides = tile_corners(model)
    np.testing.assert_array_equal(corners, COORDS)
    assert set(sides) == {256.0}
    path = tmp_path / "s.geojson"
    path.write_text(json.dumps(collection))
    found = read_annotations(path, (1024, 1024))
    tiles = found.select(object_types=("tile",))
    assert [t.geometry.bounds for t in tiles] == [(x, y, x + 256, y + 256) for x, y in COORDS.tolist()]
    assert [t.measurements["tissue_fraction"] for t in tiles] == pytest.approx(np.linspace(0.3, 1, 5))
    assert found.warnings == []


def test_attention_round_trip_through_the_reader(tmp_path) -> None:
    for legacy in (False, True):
        path = write_attention_geojson(tmp_path / f"a{legacy}.geojson", "s", COORDS, 256, ATTENTION, legacy=legacy)
        found = read_annotations(path)
        tiles = found.select(object_types=("detection",))
        assert [t.geometry.bounds[:2] for t in tiles] == [tuple(map(float, c)) for c in COORDS]
        assert [t.measurements["attention"] for t in tiles] == pytest.approx(ATTENTION.mean(0))
        assert found.select(["Top attention"], object_types=None)  # classification read back


# --- what QuPath writes ------------------------------------------------------------------------------------
def _qupath_05_export() -> dict:
    """``exportObjectsToGeoJson(getAnnotationObjects(), path, "FEATURE_COLLECTION")`` in QuPath 0.4 / 0.5."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "5f7c1a1e-8d3b-4b7a-9a8e-0c2b6e4d1f21",
                "geometry": {"type": "Polygon", "coordinates": _square(0, 0, 400, 400)},
                "properties": {
                    "objectType": "annotation",
                    "name": "region A",
                    "isLocked": True,
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "measurements": {"Area µm^2": 40000.0, "Num Detections": "NaN"},
                    "metadata": {"author": "dr x"},
                },
            },
            {
                "type": "Feature",
                "id": "b1d2c3e4-0000-4000-8000-000000000002",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [_square(600, 0, 700, 100), _square(800, 0, 900, 100)],
                    "plane": {"c": -1, "z": 0, "t": 0},
                },
                "properties": {
                    "objectType": "annotation",
                    "classification": {"names": ["Tumor", "Positive"], "color": [255, 0, 0, 128]},
                },
            },
            {
                "type": "Feature",
                "id": "c1d2c3e4-0000-4000-8000-000000000003",
                "geometry": {"type": "Polygon", "coordinates": _square(0, 500, 300, 700)},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Stroma", "color": [150, 200, 150]},
                },
            },
            {
                "type": "Feature",
                "id": "d1d2c3e4-0000-4000-8000-000000000004",
                "geometry": {"type": "MultiPoint", "coordinates": [[10, 10], [20, 20]]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Immune cells", "color": [160, 90, 160]},
                },
            },
            {
                "type": "Feature",
                "id": "e1d2c3e4-0000-4000-8000-000000000005",
                "geometry": {"type": "Polygon", "coordinates": _square(100, 100, 110, 110)},
                "nucleusGeometry": {"type": "Polygon", "coordinates": _square(102, 102, 108, 108)},
                "properties": {"objectType": "cell", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
            },
            {
                "type": "Feature",
                "id": "f1d2c3e4-0000-4000-8000-000000000006",
                "geometry": {"type": "Polygon", "coordinates": _square(1000, 1000, 1200, 1100)},
                "properties": {"objectType": "annotation"},
            },  # unclassified
        ],
    }


def test_reads_qupath_0_4_and_later_exports(tmp_path) -> None:
    path = tmp_path / "slide_a.svs.geojson"  # QuPath names exports after the image, extension included
    path.write_text("\ufeff" + json.dumps(_qupath_05_export(), ensure_ascii=False), encoding="utf-8")
    assert find_annotation_file(tmp_path, "slide_a") == path
    found = read_annotations(path, (2000, 2000))
    assert [a.classification for a in found.annotations] == ["Tumor", "Tumor: Positive", "Stroma", "Tumor", None]
    assert [a.object_type for a in found.annotations] == ["annotation"] * 3 + ["cell", "annotation"]
    assert found.annotations[0].name == "region A" and found.annotations[0].color == (200, 0, 0)
    assert found.annotations[0].measurements == {"Area µm^2": 40000.0}  # "NaN" dropped
    assert any("MultiPoint has no area" in w for w in found.warnings)
    # Tumor (case-insensitive) matches the derived class too, cells are not annotations, overlaps count once.
    assert len(found.select(["tumor"])) == 2
    assert found.region(["Tumor"]).area == pytest.approx(400 * 400 + 2 * 100 * 100)
    assert found.region(["Tumor: Positive"]).area == pytest.approx(2 * 100 * 100)
    assert found.region(["*"]).area == pytest.approx(400 * 400 + 2 * 100 * 100 + 300 * 200 + 200 * 100)
    served = to_feature_collection(found, "slide_a")
    validate_geojson(served)
    assert served["features"][1]["properties"]["classification"] == {"name": "Tumor: Positive", "color": [255, 0, 0]}


def test_reads_bare_lists_and_the_0_2_and_0_3_forms(tmp_path) -> None:
    v03 = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": _square(0, 0, 100, 100)},
            "properties": {
                "object_type": "annotation",
                "isLocked": False,
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "measurements": [{"name": "Area px", "value": 10000.0}],
            },
        }
    ]
    v02 = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {"type": "Polygon", "coordinates": _square(0, 0, 50, 50)},
            "properties": {
                "classification": {"name": "Pen", "colorRGB": -16777216},
                "isLocked": False,
                "measurements": [],
            },
        },
        {
            "type": "Feature",
            "id": "PathDetectionObject",
            "geometry": {"type": "Polygon", "coordinates": _square(0, 0, 5, 5)},
            "properties": {},
        },
    ]
    (tmp_path / "v03.json").write_text(json.dumps(v03))
    a = read_annotations(tmp_path / "v03.json")
    assert a.annotations[0].color == (200, 0, 0) and a.annotations[0].measurements == {"Area px": 10000.0}
    (tmp_path / "v02.geojson").write_text(json.dumps(v02))
    b = read_annotations(tmp_path / "v02.geojson")
    assert [(x.object_type, x.classification) for x in b.annotations] == [("annotation", "Pen"), ("detection", None)]
    single = parse_geojson(v03[0])  # one Feature
    bare_geometry = parse_geojson({"type": "Polygon", "coordinates": _square(0, 0, 10, 10)})
    assert len(single.annotations) == 1 and bare_geometry.annotations[0].classification is None


# --- bad files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\nbinary", "not a GeoJSON file"),
        (b"{ broken json", "not a GeoJSON file"),
        (b'{"hello": 1}', "not GeoJSON: expected a FeatureCollection"),
        (b'{"type": "FeatureCollection", "features": [{"type": "Feature"}]}', "item #0 is not a GeoJSON Feature"),
        (
            json.dumps(
                {
                    "type": "Feature",
                    "geometry": {"type": "Circle", "coordinates": [1, 2], "radius": 3},
                    "properties": {},
                }
            ).encode(),
            "unknown geometry type 'Circle'",
        ),
        (
            json.dumps(
                {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "abc"}, "properties": {}}
            ).encode(),
            "malformed Polygon",
        ),
        (b'{"type": "Polygon", "coordinates": [[[0, 0], [NaN, 0], [1, 1], [0, 0]]]}', "not all finite"),
        (
            json.dumps({"type": "Polygon", "coordinates": _square(5000, 5000, 6000, 6000)}).encode(),
            "all 1 polygon\\(s\\) lie outside the slide",
        ),
    ],
)
def test_bad_files_get_a_message_naming_the_file(tmp_path, content, message) -> None:
    path = tmp_path / "slide_x.geojson"
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotations(path, (1000, 1000))
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path) -> None:
    (tmp_path / "slide_d.geojson").mkdir()  # a folder where a file should be
    with pytest.raises(AnnotationError, match="cannot read annotations"):
        read_annotations(tmp_path / "slide_d.geojson")


def test_self_intersecting_and_overhanging_polygons_are_repaired_and_said_so() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [200, 200], [200, 0], [0, 200], [0, 0]]]}
    found = parse_geojson(
        {
            "type": "Feature",
            "geometry": bowtie,
            "properties": {"classification": {"name": "Tumor", "color": [1, 2, 3]}},
        },
        "f",
        (1000, 1000),
    )
    assert found.annotations[0].geometry.is_valid
    assert found.annotations[0].geometry.area == pytest.approx(2 * 100 * 200 / 2)  # the two triangles
    assert found.warnings == [
        "feature #0 (Tumor): invalid Polygon (Self-intersection[100 100]) repaired with make_valid"
    ]
    over = parse_geojson({"type": "Polygon", "coordinates": _square(900, 0, 1100, 100)}, "f", (1000, 1000))
    assert over.annotations[0].geometry.bounds == (900, 0, 1000, 100)
    assert "50.0% of its area lies outside the slide (1000 x 1000 px), clipped" in over.warnings[0]


# --- coverage ----------------------------------------------------------------------------------------------
def test_tile_coverage_is_exact() -> None:
    coords = np.array([[0, 0], [100, 0], [200, 0], [0, 100], [1000, 1000]])
    region = shapely.Polygon(_square(50, 0, 250, 100)[0], holes=[_square(120, 20, 140, 40)[0]])
    got = tile_coverage(coords, 100, region)
    np.testing.assert_allclose(got, [0.5, 1 - 0.04, 0.5, 0.0, 0.0])
    overlapping = shapely.MultiPolygon([shapely.box(0, 0, 60, 100), shapely.box(40, 0, 100, 100)])
    assert tile_coverage(coords[:1], 100, shapely.make_valid(overlapping))[0] == pytest.approx(1.0)
    assert tile_coverage(coords, 100, shapely.Polygon()).tolist() == [0.0] * 5


def test_tile_coverage_matches_shapely_tile_by_tile() -> None:
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 40, size=(300, 2)) * 50
    blobs = shapely.union_all([shapely.Point(rng.uniform(0, 2000, 2)).buffer(rng.uniform(50, 400)) for _ in range(6)])
    region = blobs.difference(shapely.Point(1000, 1000).buffer(120))
    got = tile_coverage(coords, 128, region)
    expected = [shapely.box(x, y, x + 128, y + 128).intersection(region).area / 128**2 for x, y in coords]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert 0 < (got == 1).sum() < (got > 0).sum()  # both wholly-inside and edge tiles were exercised
