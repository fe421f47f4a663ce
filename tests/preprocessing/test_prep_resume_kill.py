"""kill -9 in the middle leaves no file under a final name, and the rerun equals an uninterrupted run;
several device processes share one slide queue."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from acmil.cli import main as acmil_main
from acmil.features import read_features
from acmil.synthetic.slides import generate_cohort

# ~190 tiles of 32 px (64 level-0 px) per slide, 12 batches: long enough to be killed half-way through a slide.
ARGS = [
    "--encoder",
    "resnet18",
    "--weights",
    "random",
    "--resize",
    "none",
    "--tile-size",
    "32",
    "--target-mpp",
    "1.0",
    "--batch-size",
    "16",
    "--no-progress",
]


def _manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as f:
        return {r["slide_id"]: r for r in csv.DictReader(f)}


def _same(a: Path, b: Path) -> None:
    fa, fb = read_features(a), read_features(b)
    assert np.array_equal(fa.features, fb.features) and np.array_equal(fa.coords, fb.coords)
    drop = {"created"}
    assert {k: v for k, v in fa.attrs.items() if k not in drop} == {k: v for k, v in fb.attrs.items() if k not in drop}
    assert fa.coord_attrs == fb.coord_attrs


@pytest.mark.slow
def test_kill9_then_resume_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "syn"
    generate_cohort(data, 3, seed=11, width=1536, height=1024, workers=1)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "acmil",
        "preprocess",
        "--slides",
        str(data / "slides"),
        "--out",
        str(out),
        *ARGS,
        "--workers",
        "1",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    feats = out / "features"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:  # wait until one slide is done and another half-way
            if feats.is_dir() and list(feats.glob("*.h5")) and list(feats.glob(".*.partial")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its DataLoader worker, if still there
        except ProcessLookupError:
            pass
    finished = sorted(feats.glob("*.h5"))
    assert 1 <= len(finished) < 3 and list(feats.glob(".*.partial"))
    for path in finished:  # whatever carries a final name is whole
        assert read_features(path).n_patches > 0

    assert acmil_main(["preprocess", "--slides", str(data / "slides"), "--out", str(out), *ARGS, "--workers", "0"]) == 0
    rows = _manifest(out)
    assert len(rows) == 3 and {r["status"] for r in rows.values()} <= {"ok", "skipped"}
    assert sum(r["status"] == "skipped" for r in rows.values()) == len(finished)
    assert not list(feats.glob(".*.partial"))

    ref = tmp_path / "ref"
    assert acmil_main(["preprocess", "--slides", str(data / "slides"), "--out", str(ref), *ARGS, "--workers", "0"]) == 0
    for path in sorted((ref / "features").glob("*.h5")):
        _same(path, feats / path.name)


@pytest.mark.slow
def test_two_device_processes_share_the_queue(syn_cohort, tmp_path, fast_args):
    out = tmp_path / "out"
    code = acmil_main(
        [
            "preprocess",
            "--slides",
            str(syn_cohort / "slides"),
            "--out",
            str(out),
            *fast_args,
            "--workers",
            "0",
            "--devices",
            "cpu,cpu",
        ]
    )
    assert code == 0
    rows = _manifest(out)
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"ok"}
    single = tmp_path / "single"
    assert (
        acmil_main(
            [
                "preprocess",
                "--slides",
                str(syn_cohort / "slides"),
                "--out",
                str(single),
                *fast_args,
                "--workers",
                "0",
                "--devices",
                "cpu",
            ]
        )
        == 0
    )
    for path in sorted((single / "features").glob("*.h5")):
        _same(path, out / "features" / path.name)
