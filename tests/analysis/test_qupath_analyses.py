"""The analyses with QuPath: ``localisation`` / ``umap`` with ``--annotations`` instead of PNG masks, and
``heatmap --format geojson``, on the trained cohort checkpoints."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from acmil.analysis.heatmaps import main as heatmap_main
from acmil.analysis.localisation import main as localisation_main
from acmil.analysis.masks import tile_labels
from acmil.analysis.umap_plot import main as umap_main
from acmil.checkpoint import load_model
from acmil.features import read_features
from acmil.geojson import tile_corners, validate_geojson
from acmil.inference import predict_bag


def _mask_square(cohort, slide_id: str) -> list:
    """The planted tumour square of a slide, in level-0 pixels, from its PNG mask."""
    mask = np.asarray(Image.open(cohort.masks / f"{slide_id}.png")) > 0
    feats = read_features(cohort.features / f"{slide_id}.h5")
    ds = feats.coord_attrs["level0_width"] / mask.shape[1]
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min() * ds, ys.min() * ds, (xs.max() + 1) * ds, (ys.max() + 1) * ds
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


@pytest.fixture(scope="module")
def annotations(cohort, tmp_path_factory):
    """QuPath 0.4+ exports of the planted squares (class Tumor) plus an unrelated Stroma annotation."""
    folder = tmp_path_factory.mktemp("qupath_annotations")
    for slide_id, label in cohort.labels.items():
        if not label:
            continue
        stroma = [[[0, 0], [200, 0], [200, 200], [0, 200], [0, 0]]]
        features = [
            {
                "type": "Feature",
                "id": "6a1c8d0e-1f2b-4c3d-8e9f-0a1b2c3d4e5f",
                "geometry": {"type": "Polygon", "coordinates": _mask_square(cohort, slide_id)},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
            },
            {
                "type": "Feature",
                "id": "7a1c8d0e-1f2b-4c3d-8e9f-0a1b2c3d4e5f",
                "geometry": {"type": "Polygon", "coordinates": stroma},
                "properties": {"objectType": "annotation", "classification": {"name": "Stroma", "color": [0, 200, 0]}},
            },
        ]
        (folder / f"{slide_id}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return folder


def test_localisation_from_annotations_equals_the_masks(cohort, acmil_ckpt, annotations, tmp_path, capsys) -> None:
    base = ["--checkpoint", str(acmil_ckpt), "--features", str(cohort.features)]
    assert localisation_main([*base, "--masks", str(cohort.masks), "--out", str(tmp_path / "m")]) == 0
    assert (
        localisation_main(
            [*base, "--annotations", str(annotations), "--classes", "tumor", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    by_mask = json.loads((tmp_path / "m" / "localisation.json").read_text())
    by_annotation = json.loads((tmp_path / "a" / "localisation.json").read_text())
    assert by_annotation["ground_truth"] == {"annotations": str(annotations), "classes": ["tumor"]}
    assert by_annotation["slides"] == by_mask["slides"]  # same tumour tiles, same AUCs
    assert by_annotation["mean_auc"] == by_mask["mean_auc"] > 0.6
    assert set(by_annotation["skipped"]) == {s for s, y in cohort.labels.items() if not y}
    assert all(v == "no annotations file" for v in by_annotation["skipped"].values())

    # Annotations of another class only: every slide is all-normal, and the command says which classes exist.
    capsys.readouterr()
    assert (
        localisation_main(
            [*base, "--annotations", str(annotations), "--classes", "Necrosis", "--out", str(tmp_path / "n")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "no annotation of class Necrosis (classes in the file: Tumor: 1, Stroma: 1)" in out
    assert "no slide has both tumour and normal tiles" in out


def test_a_bad_annotation_file_is_one_slide_s_error(cohort, acmil_ckpt, annotations, tmp_path) -> None:
    folder = tmp_path / "ann"
    folder.mkdir()
    for path in annotations.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "slide_01.geojson").write_text('{"type": "Feature", "geometry": {"type": "Ellipse"}}')
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [3072, 3072], [3072, 0], [0, 3072], [0, 0]]]}
    (folder / "slide_03.geojson").write_text(
        json.dumps({"type": "Feature", "geometry": bowtie, "properties": {"classification": "Tumor"}})
    )
    assert (
        localisation_main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--annotations",
                str(folder),
                "--out",
                str(tmp_path / "loc"),
            ]
        )
        == 0
    )
    s = json.loads((tmp_path / "loc" / "localisation.json").read_text())
    error = s["errors"]["slide_01"]
    assert "unknown geometry type 'Ellipse'" in error and "slide_01.geojson" in error
    assert any("make_valid" in w for w in s["warnings"]["slide_03"])
    assert "slide_03" in {r["slide_id"] for r in s["slides"]}  # repaired and used
    assert len(s["slides"]) == sum(cohort.labels.values()) - 1  # every other tumour slide still computed


def test_localisation_needs_one_ground_truth(cohort, acmil_ckpt, annotations, tmp_path, capsys) -> None:
    base = ["--checkpoint", str(acmil_ckpt), "--features", str(cohort.features), "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        localisation_main(base)
    with pytest.raises(SystemExit):
        localisation_main([*base, "--masks", str(cohort.masks), "--annotations", str(annotations)])
    with pytest.raises(FileNotFoundError, match="annotations folder not found"):
        localisation_main([*base, "--annotations", str(tmp_path / "none")])


def test_umap_coloured_by_annotations(cohort, acmil_ckpt, annotations, tmp_path) -> None:
    slides = ["slide_00", "slide_01", "slide_03"]
    assert (
        umap_main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--slides",
                *slides,
                "--annotations",
                str(annotations),
                "--max-points-per-slide",
                "40",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    s = json.loads((tmp_path / "umap.json").read_text())
    assert s["coloured_by"] == ["attention_rank", "branch", "tumour"] and s["ground_truth"]["classes"] == ["Tumor"]
    rows = list(csv.DictReader((tmp_path / "umap.csv").open()))
    for slide_id in slides:  # the labels the PNG masks give, tile by tile
        feats = read_features(cohort.features / f"{slide_id}.h5")
        expected = tile_labels(cohort.masks, feats, missing_is_negative=True)
        got = [(int(r["tile"]), r["tumour"] == "1") for r in rows if r["slide_id"] == slide_id]
        assert got and all(expected[t] == y for t, y in got)
    assert any(r["tumour"] == "1" for r in rows)


def test_heatmap_geojson_for_qupath(cohort, acmil_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "hm"
    assert (
        heatmap_main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--out",
                str(out),
                "--slide-ids",
                "slide_01",
                "slide_02",
                "--format",
                "geojson",
                "--top-k",
                "7",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "heatmaps.json",
        "slide_01_attention.geojson",
        "slide_02_attention.geojson",
    ]  # no PNGs asked for
    slide = read_features(cohort.features / "slide_01.h5")
    model = validate_geojson(out / "slide_01_attention.geojson")
    corners, sides = tile_corners(model)
    np.testing.assert_array_equal(corners, slide.coords)
    assert set(sides) == {slide.coord_attrs["patch_size_level0"]}
    att = predict_bag(load_model(acmil_ckpt).model, slide.features).attention  # (M, N)
    m = [f.properties.measurements for f in model.features]
    np.testing.assert_allclose([x["attention"] for x in m], att.mean(0), rtol=1e-6)
    np.testing.assert_allclose([x["attention_branch_2"] for x in m], att[2], rtol=1e-6)
    assert sum(f.properties.classification is not None for f in model.features) == 7
    summary = json.loads((out / "heatmaps.json").read_text())
    assert summary["formats"] == ["geojson"] and summary["slides"]["slide_01"]["files"] == [
        "slide_01_attention.geojson"
    ]

    both = tmp_path / "both"
    assert (
        heatmap_main(
            [
                "--checkpoint",
                str(acmil_ckpt),
                "--features",
                str(cohort.features),
                "--out",
                str(both),
                "--slide-ids",
                "slide_01",
                "--format",
                "png,geojson",
                "--no-branches",
                "--geojson-legacy",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in both.glob("slide_01*")) == ["slide_01_attention.geojson", "slide_01_mean.png"]
    validate_geojson(both / "slide_01_attention.geojson", legacy=True)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        heatmap_main(
            ["--checkpoint", str(acmil_ckpt), "--features", str(cohort.features), "--out", str(both), "--format", "svg"]
        )
    assert "--format: expected png, geojson or png,geojson, got 'svg'" in capsys.readouterr().err
