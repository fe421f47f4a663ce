"""A full output disk: the slide fails with "disk full while writing <file>", nothing partial remains, the run
stops with a summary and a non-zero exit (never a segfault), the manifest stays whole, and a rerun resumes.

The disk is a small tmpfs the test mounts (root only; skipped where mounting is not allowed)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from acmil.features import read_features


@pytest.fixture
def small_disk(tmp_path):
    """A 5 MiB tmpfs mounted for this test (``remount(size)`` grows it)."""
    mnt = Path("/tmp") / f"acmil-diskfull-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        mnt.rmdir()
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    try:
        yield mnt, remount
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def _fill(folder: Path, leave_kib: int) -> None:
    """Leave about ``leave_kib`` KiB free on ``folder``'s file system."""
    free = shutil.disk_usage(folder).free // 1024
    with open(folder / "ballast", "wb") as f:
        f.write(b"\0" * max(0, (free - leave_kib)) * 1024)


WRITER = r"""
import sys
import numpy as np
from acmil.features import DiskFullError, FeatureWriter
stage = "create"
try:
    w = FeatureWriter(sys.argv[1], 512)
    stage = "append"
    for _ in range(40):
        w.append(np.zeros((16, 512), np.float32), np.zeros((16, 2)))
    stage = "close"
    w.close()
    print("written")
except DiskFullError as err:
    print(f"{stage}: {err}")
"""


@pytest.mark.parametrize("leave_kib", [0, 8, 200])
def test_feature_writer_on_a_full_disk_raises_and_exits_cleanly(small_disk, leave_kib):
    mnt, _ = small_disk
    _fill(mnt, leave_kib)
    target = mnt / "slide.h5"
    r = subprocess.run([sys.executable, "-c", WRITER, str(target)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"rc {r.returncode} (139 = segfault)\n{r.stderr[-2000:]}"
    assert f"disk full while writing {target}" in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in mnt.iterdir()) == ["ballast"]  # no partial file, no final file


def _rows(manifest: Path) -> dict[str, dict]:
    with open(manifest, newline="") as f:
        return {r["slide_id"]: r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_preprocess_on_a_full_disk_stops_cleanly_then_resumes(small_disk, syn_cohort, fast_args):
    mnt, remount = small_disk
    out = mnt / "pre"
    cmd = [sys.executable, "-m", "acmil", "preprocess", "--slides", str(syn_cohort / "slides"), "--out", str(out)]
    cmd += [a for a in fast_args if a != "--no-progress"] + ["--workers", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    err = r.stderr
    assert r.returncode == 1, f"rc {r.returncode} (139 = segfault)\n{err[-3000:]}"
    assert "Traceback" not in err
    assert "disk full while writing " + str(out) in err
    assert "preprocess: 4 slides:" in err and "preprocess: stopped: disk full while writing" in err
    leftovers = [p for p in out.rglob("*") if "partial" in p.name]
    assert leftovers == []
    for h5 in (out / "features").glob("*.h5"):  # whatever carries a final name is whole
        assert read_features(h5).n_patches > 0
    rows = _rows(out / "manifest.csv")  # whole CSV (the rows it could save)
    assert all(r["status"] in ("ok", "failed") for r in rows.values())
    assert any("disk full while writing" in r["error"] for r in rows.values() if r["status"] == "failed")

    remount("64m")  # space freed: the same command finishes the job
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(out / "manifest.csv")
    assert len(rows) == 4 and all(r["status"] in ("ok", "skipped") for r in rows.values())
    assert {p.stem for p in (out / "features").glob("*.h5")} == set(rows)
