"""What a user reads: --help, option spelling, progress in a log file, and the QC picture."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from acmil.preprocessing.cli import build_parser, parse_args


def _help_line(text: str, option: str) -> str:
    """The help of ``option`` (its lines joined)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 8) or line.strip().startswith("-"):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def test_help_reads_the_right_way_round():
    text = build_parser().format_help()
    for switch in ("--no-qc", "--no-progress", "--overwrite"):
        assert "(default: True)" not in _help_line(text, switch) and "(default: False)" not in _help_line(text, switch)
    batch = _help_line(text, "--batch-size")
    assert "tiles" in batch and "(default: 32)" in batch
    assert "(default: 256)" in _help_line(text, "--tile-size")


def test_abbreviated_options_are_errors(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--slides", "s", "--out", "o", "--tile-s", "64"])
    assert info.value.code == 2
    assert "--tile-s" in capsys.readouterr().err
    assert parse_args(["--slides", "s", "--out", "o", "--tile-size", "64"]).tile_size == 64


@pytest.mark.slow
def test_progress_in_a_log_file_is_one_line_per_slide(syn_cohort, tmp_path, fast_args):
    log = tmp_path / "preprocess.log"
    args = [a for a in fast_args if a != "--no-progress"]
    cmd = [sys.executable, "-m", "acmil", "preprocess", "--slides", str(syn_cohort / "slides")]
    with open(log, "w") as f:
        r = subprocess.run(
            [*cmd, "--out", str(tmp_path / "out"), *args],
            stderr=f,
            stdout=subprocess.DEVNULL,
            timeout=600,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    text = log.read_text()
    assert r.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b[" not in text  # no bar redraws in the file
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and [line.split("]")[0] for line in lines] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert all(": ok, " in line and " tiles, " in line for line in lines)


@pytest.mark.slow
def test_qc_picture_has_a_title_a_legend_and_a_readable_size(shared_slides, tmp_path, fast_args):
    from acmil.preprocessing.cli import main

    out = tmp_path / "out"
    assert main(["--slides", str(shared_slides / "CMU-1-Small-Region.svs"), "--out", str(out), *fast_args]) == 0
    png = cv2.imread(str(out / "qc" / "CMU-1-Small-Region.png"))
    h, w = png.shape[:2]
    assert max(h, w) >= 800, (w, h)  # was 277 x 370
    header = png[:76]  # title and legend band above the slide image
    assert (header.min(axis=2) < 80).mean() > 0.005  # dark text is there
    legend_green = (header[..., 1] > 150) & (header[..., 0] < 80) & (header[..., 2] < 80)
    assert legend_green.sum() > 20  # the "tissue contour" legend line


def test_qc_figure_text(tmp_path):
    """The title carries the slide id, MPP and tile count (rendered text checked through matplotlib)."""
    from acmil.preprocessing.qc import QCLabel, draw_qc, qc_figure

    thumb = np.full((120, 200, 3), 240, np.uint8)
    mask = np.zeros((60, 100), bool)
    mask[10:50, 20:80] = True
    overlay = draw_qc(thumb, mask, np.array([[0, 0], [512, 0]]), 512, (4000, 2400))
    assert max(overlay.shape[:2]) >= 1024
    label = QCLabel(
        slide_id="Biopsy 7 (ü)",
        mpp=0.2527,
        mpp_source="openslide.mpp",
        n_tiles=2,
        tile_size=256,
        target_mpp=0.5,
        tissue_mm2=1.234,
    )
    picture = qc_figure(overlay, label)
    assert picture.shape[1] == overlay.shape[1] and picture.shape[0] > overlay.shape[0]
