"""Slide objects and MPP resolution on the real test slides and on broken files."""

from __future__ import annotations

import numpy as np
import pytest

from acmil.preprocessing.slide import (
    MissingMPPError,
    NotAWSIError,
    SlideError,
    composite_white,
    mpp_from_properties,
    open_slide,
    slide_id_of,
)


def test_mpp_from_properties_units():
    assert mpp_from_properties({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25"}) == (0.25, "openslide.mpp")
    assert mpp_from_properties({"aperio.MPP": "0.4990"})[0] == pytest.approx(0.499)
    cm = {"tiff.XResolution": "20000", "tiff.ResolutionUnit": "centimeter"}
    assert mpp_from_properties(cm)[0] == pytest.approx(0.5)
    inch = {"tiff.XResolution": "50800", "tiff.ResolutionUnit": "inch"}
    assert mpp_from_properties(inch)[0] == pytest.approx(0.5)
    value, why = mpp_from_properties({"openslide.mpp-x": "352.7777"})  # a 72-dpi default tag
    assert value is None and "implausible" in why
    assert mpp_from_properties({})[0] is None


def test_slide_id_and_composite():
    assert slide_id_of("/a/b/TCGA-01.x.svs") == "TCGA-01.x"
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (10, 20, 30, 255)
    assert composite_white(rgba).tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_real_aperio_slide(shared_slides):
    with open_slide(shared_slides / "CMU-1-Small-Region.svs") as s:
        assert s.mpp == pytest.approx(0.499) and s.mpp_source == "openslide.mpp"
        assert s.dimensions == (2220, 2967) and s.kind == "openslide"
        tile = s.read_region(100, 100, 0, 64, 48)
        assert tile.shape == (48, 64, 3) and tile.dtype == np.uint8
        assert s.thumbnail(200, 200).shape[2] == 3


def test_missing_mpp_is_an_error_naming_the_slide(shared_slides):
    path = shared_slides / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(MissingMPPError, match="tcga-cr-7395.*--mpp"):
        open_slide(path)
    s = open_slide(path, mpp_fallback=0.25)
    assert s.mpp == 0.25 and s.mpp_source == "--mpp" and s.level_downsamples[1] == pytest.approx(2.0005, abs=1e-3)
    assert open_slide(shared_slides / "CMU-1-Small-Region.svs", mpp_fallback=0.25).mpp == pytest.approx(0.499)
    assert open_slide(shared_slides / "CMU-1-Small-Region.svs", mpp=0.3).mpp_source == "override"


def test_implausible_mpp_is_missing(shared_slides):
    with pytest.raises(MissingMPPError, match="implausible"):
        open_slide(shared_slides / "openslide-python-boxes.tiff")


def test_plain_tiff_is_not_a_wsi_unless_given_an_mpp(shared_slides):
    path = shared_slides / "kidney-48-5.tif"
    with pytest.raises(NotAWSIError, match="not a whole-slide image.*--mpp"):
        open_slide(path)
    with open_slide(path, mpp_fallback=0.5) as s:
        assert s.kind == "image" and s.dimensions == (1493, 901) and s.level_downsamples == (1.0,)
        assert s.read_region(0, 0, 0, 32, 32).shape == (32, 32, 3)


def test_broken_files(tmp_path, shared_slides):
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    text = tmp_path / "notes.svs"
    text.write_text("not a slide at all")
    with pytest.raises(SlideError, match="notes.svs: not a slide"):
        open_slide(text)
    truncated = tmp_path / "cut.svs"
    truncated.write_bytes((shared_slides / "CMU-1-Small-Region.svs").read_bytes()[:200_000])
    with pytest.raises(SlideError, match="cut.svs"):
        with open_slide(truncated) as s:
            for y in range(0, 2967, 256):  # the missing tiles surface on reading at the latest
                s.read_region(0, y, 0, 2220, 256)
