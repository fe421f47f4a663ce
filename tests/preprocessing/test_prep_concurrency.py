"""Slide ids with glob metacharacters, and two ``acmil preprocess`` runs on one output folder."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys

import pytest

from acmil.features import read_features
from acmil.preprocessing.lease import SlideLeases, stale_partials
from acmil.synthetic.slides import generate_cohort


def test_partials_are_matched_by_exact_slide_id(tmp_path):
    names = [
        ".*.h5.0123abcd.partial",
        ".!a.h5.89abcdef.partial",
        ".[ab].h5.01234567.partial",
        ".a.b.h5.01234567.partial",
    ]
    names += [".a.h5.01234567.partial", ".a.png.4242.partial.png", "a.h5"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in stale_partials(tmp_path, "*")] == [".*.h5.0123abcd.partial"]
    assert [p.name for p in stale_partials(tmp_path, "!a")] == [".!a.h5.89abcdef.partial"]
    assert [p.name for p in stale_partials(tmp_path, "[ab]")] == [".[ab].h5.01234567.partial"]
    assert sorted(p.name for p in stale_partials(tmp_path, "a")) == [
        ".a.h5.01234567.partial",
        ".a.png.4242.partial.png",
    ]


def test_a_lease_is_exclusive_across_processes(tmp_path):
    lease = SlideLeases(tmp_path).acquire("s1")
    assert lease is not None
    code = "import sys; from acmil.preprocessing.lease import SlideLeases as L; print(L(sys.argv[1]).acquire('s1'))"
    held = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert held.stdout.strip() == "None", held.stderr
    lease.release()
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert free.stdout.strip() not in ("", "None"), free.stderr


@pytest.mark.slow
def test_glob_metacharacters_in_slide_ids(syn_cohort, tmp_path, fast_args):
    slides = tmp_path / "slides"
    slides.mkdir()
    src = sorted((syn_cohort / "slides").glob("*.tif"))
    for path, name in zip(src[:3], ["*.tif", "[ab].tif", "b?.tif"], strict=True):
        shutil.copy(path, slides / name)
    out = tmp_path / "out"
    (out / "features").mkdir(parents=True)
    live = out / "features" / ".!a.h5.0123abcd.partial"  # another run is writing slide "!a" into this folder
    live.write_bytes(b"in progress")
    lease = SlideLeases(out).acquire("!a")
    try:
        for _ in range(2):  # the second run resumes: every slide skipped
            r = subprocess.run(
                [sys.executable, "-m", "acmil", "preprocess", "--slides", str(slides), "--out", str(out), *fast_args],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            assert r.returncode == 0, r.stderr[-3000:]
    finally:
        lease.release()
    assert live.exists(), "slide '*' deleted the in-progress file of slide '!a'"
    for sid in ("*", "[ab]", "b?"):
        assert read_features(out / "features" / f"{sid}.h5").n_patches > 0
    assert "3 skipped" in r.stderr


@pytest.mark.slow
def test_two_runs_on_one_output_split_the_slides(tmp_path, fast_args):
    data = tmp_path / "syn"
    generate_cohort(data, 6, seed=3, width=1536, height=1024, workers=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "acmil", "preprocess", "--slides", str(data / "slides"), "--out", str(out)]
    cmd += [*fast_args, "--workers", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in runs]
    counts = []
    for p, (_, err) in zip(runs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        found = re.search(r"preprocess: 6 slides: (\d+) ok, (\d+) skipped, (\d+) failed", err)
        assert found, err[-3000:]
        counts.append(tuple(int(v) for v in found.groups()))
    assert sum(c[0] for c in counts) == 6, counts  # every slide encoded exactly once over the two runs
    assert all(c[0] + c[1] == 6 and c[2] == 0 for c in counts), counts  # each run accounts for all six
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"ok", "skipped"}
    for r in rows:
        assert read_features(out / "features" / f"{r['slide_id']}.h5").n_patches > 0
    assert not [p for p in out.rglob("*") if "partial" in p.name]


def test_each_writer_names_its_own_leftovers(tmp_path):
    """The feature writer's temporary file is one acmil.atomic.leftovers finds; a finished write leaves none."""
    import numpy as np

    from acmil.atomic import leftovers, write_json
    from acmil.features import FeatureWriter

    writer = FeatureWriter(tmp_path / "s.h5", dim=4)
    writer.append(np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int64))
    assert leftovers(tmp_path / "s.h5") == [writer.tmp_path] and leftovers(tmp_path / "s") == []
    assert stale_partials(tmp_path, "s") == [writer.tmp_path]
    writer.close()
    write_json(tmp_path / "s.geojson", {})
    assert leftovers(tmp_path / "s.h5") == [] and stale_partials(tmp_path, "s") == []
