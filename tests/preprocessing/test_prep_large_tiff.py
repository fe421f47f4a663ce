"""A pyramid-less large TIFF: the segmentation thumbnail is read in bounded memory; a 200k x 200k claim is
refused with a message that names the slide and says what to do."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

MIB = 1 << 20
BOUND_MIB = 200  # the bound stated in acmil/preprocessing/thumbnail.py and the README


def _tile(color) -> bytes:
    tile = np.empty((256, 256, 3), np.uint8)
    tile[:] = color
    return zlib.compress(tile.tobytes(), 9)


def write_constant_tiff(path: Path, side: int, color=(255, 255, 255), mpp: float = 0.5) -> Path:
    """One level, tiled 256 x 256, zlib, every tile the same (a few MB for 25k x 25k)."""
    encoded = _tile(color)
    n = (-(-side // 256)) ** 2
    res = 1e4 / mpp
    tifffile.imwrite(
        path,
        (encoded for _ in range(n)),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )
    return path


def write_claim_tiff(path: Path, side: int, mpp: float = 0.5) -> Path:
    """A classic TIFF that claims ``side`` x ``side`` px: every tile offset points at one stored tile (~5 MB)."""
    tile = _tile((255, 255, 255))
    n = (-(-side // 256)) ** 2
    data_at = 8
    bps_at = data_at + len(tile) + (len(tile) & 1)
    res_at = bps_at + 6 + 2
    offsets_at = res_at + 16
    counts_at = offsets_at + 4 * n
    ifd_at = counts_at + 4 * n
    res = int(1e4 / mpp)
    entries = [  # tag, type (3 SHORT, 4 LONG, 5 RATIONAL), count, value or offset
        (256, 4, 1, side), (257, 4, 1, side), (258, 3, 3, bps_at), (259, 3, 1, 8), (262, 3, 1, 2),
        (277, 3, 1, 3), (282, 5, 1, res_at), (283, 5, 1, res_at + 8), (284, 3, 1, 1), (296, 3, 1, 3),
        (322, 4, 1, 256), (323, 4, 1, 256), (324, 4, n, offsets_at), (325, 4, n, counts_at),
    ]  # fmt: skip
    with open(path, "wb") as f:
        f.write(b"II" + struct.pack("<HI", 42, ifd_at))
        f.write(tile + b"\0" * (len(tile) & 1))
        f.write(struct.pack("<3H", 8, 8, 8) + b"\0\0")
        f.write(struct.pack("<4I", res, 1, res, 1))
        f.write(np.full(n, data_at, "<u4").tobytes())
        f.write(np.full(n, len(tile), "<u4").tobytes())
        f.write(struct.pack("<H", len(entries)))
        for tag, typ, count, value in entries:
            packed = struct.pack("<H", value) + b"\0\0" if typ == 3 and count == 1 else struct.pack("<I", value)
            f.write(struct.pack("<HHI", tag, typ, count) + packed)
        f.write(struct.pack("<I", 0))
    return path


# Peak RSS from /proc (VmHWM), not getrusage: ru_maxrss survives exec, so a child forked from a large pytest
# process reports the parent's RSS as its own peak.
MEASURE = r"""
import sys
from acmil.preprocessing.slide import open_slide

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

slide = open_slide(sys.argv[1])
before = status("VmRSS")
thumb = slide.thumbnail(3125, 3125)
print(thumb.shape[1], thumb.shape[0], before, status("VmHWM"))
"""


def _limited(cmd: list[str], gib: int, timeout: int) -> subprocess.CompletedProcess:
    """Run with an address-space limit, so the unbounded reader fails instead of swamping the machine."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, env=env)


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory) -> Path:
    return write_constant_tiff(tmp_path_factory.mktemp("big") / "big25k.tif", 25_000, color=(235, 190, 215))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads peak memory from /proc")
def test_thumbnail_of_a_25k_single_level_tiff_stays_in_bounded_memory(big_tiff):
    r = _limited([sys.executable, "-c", MEASURE, str(big_tiff)], gib=4, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    w, h, before, peak = (int(v) for v in r.stdout.split())
    assert (w, h) == (3125, 3125)
    assert (peak - before) / MIB < BOUND_MIB, f"thumbnail took {(peak - before) / MIB:.0f} MiB"


def test_thumbnail_matches_the_image(tmp_path):
    from acmil.preprocessing.slide import open_slide

    path = write_constant_tiff(tmp_path / "pink.tif", 6000, color=(235, 190, 215))
    thumb = open_slide(path).thumbnail(300, 300)
    assert thumb.shape == (300, 300, 3)
    assert np.abs(thumb.astype(int) - (235, 190, 215)).max() <= 1  # no white seams between blocks


def test_a_200k_claim_is_refused_with_a_clear_message(tmp_path):
    from acmil.preprocessing.slide import SlideError, open_slide

    path = write_claim_tiff(tmp_path / "claim.tif", 200_000)
    slide = open_slide(path)
    assert slide.dimensions == (200_000, 200_000)
    with pytest.raises(SlideError) as info:
        slide.thumbnail(4096, 4096)
    msg = str(info.value)
    assert str(path) in msg and "200000x200000" in msg and "pyramid" in msg and "vips tiffsave" in msg


@pytest.mark.slow
def test_preprocess_names_the_slide_too_large_to_thumbnail_and_goes_on(tmp_path, fast_args):
    slides = tmp_path / "slides"
    slides.mkdir()
    write_constant_tiff(slides / "blank.tif", 4000)  # white: no tissue, fails after its thumbnail
    write_claim_tiff(slides / "claim200k.tif", 200_000)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "acmil", "preprocess", "--slides", str(slides), "--out", str(out), *fast_args]
    r = _limited(cmd, gib=12, timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "blank.tif: no tissue detected" in r.stderr
    assert "claim200k.tif: level 0 is 200000x200000 px" in r.stderr and "cannot read a thumbnail ()" not in r.stderr
