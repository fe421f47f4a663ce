"""`acmil preprocess` end to end: real slides, bad input, resume, shards, level equivalence."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from acmil.cli import main as acmil_main
from acmil.features import read_features, read_meta
from acmil.preprocessing.dataset import read_tile
from acmil.preprocessing.discover import discover, shard
from acmil.preprocessing.slide import open_slide
from acmil.preprocessing.tissue import saturation


def _manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as f:
        return {r["slide_id"]: r for r in csv.DictReader(f)}


def _run(slides, out, *extra) -> int:
    return acmil_main(["preprocess", "--slides", str(slides), "--out", str(out), *extra])


def _link(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / src.name).symlink_to(src)
    return folder / src.name


def test_real_slide_tiles_lie_on_tissue(shared_slides, tmp_path, fast_args):
    slides = tmp_path / "in"
    _link(shared_slides / "CMU-1-Small-Region.svs", slides)
    args = [a for a in fast_args]
    args[args.index("--target-mpp") + 1] = "1.0"  # 64 px at 1 µm/px: ~128 level-0 px tiles
    assert _run(slides, tmp_path / "out", *args, "--workers", "1") == 0
    row = _manifest(tmp_path / "out")["CMU-1-Small-Region"]
    assert row["status"] == "ok" and float(row["mpp"]) == pytest.approx(0.499)
    feats = read_features(tmp_path / "out" / "features" / "CMU-1-Small-Region.h5")
    assert feats.features.shape == (int(row["n_tiles"]), 512) and 20 < feats.n_patches < 600
    ps0 = feats.coord_attrs["patch_size_level0"]
    assert ps0 == round(64 * 1.0 / 0.499)
    assert (feats.coords >= 0).all() and (feats.coords + ps0 <= [2220 + 1, 2967 + 1]).all()
    assert feats.attrs["encoder"] == "resnet18" and feats.attrs["encoder_weights"] == "random"
    assert feats.attrs["mpp_target"] == 1.0 and "tissue_params" in feats.attrs and "transform" in feats.attrs
    with open_slide(shared_slides / "CMU-1-Small-Region.svs") as s:  # every tile shows stained tissue
        sats = [saturation(s.read_region(x, y, 0, ps0, ps0)).mean() for x, y in feats.coords]
    assert min(sats) > 10
    assert (tmp_path / "out" / "qc" / "CMU-1-Small-Region.png").stat().st_size > 1000
    # and the tissue strip is not everything: most of the grid was dropped as background
    assert feats.n_patches < 0.7 * (2220 // ps0) * (2967 // ps0)


def test_missing_mpp_fails_then_works_with_mpp(shared_slides, tmp_path, fast_args, capsys):
    slides = tmp_path / "in"
    _link(shared_slides / "tcga-cr-7395-01a-01-ts1.svs", slides)
    assert _run(slides, tmp_path / "out", *fast_args, "--workers", "0") == 1
    row = _manifest(tmp_path / "out")["tcga-cr-7395-01a-01-ts1"]
    assert row["status"] == "failed" and "no usable MPP" in row["error"] and "--mpp" in row["error"]
    assert "FAILED tcga-cr-7395-01a-01-ts1" in capsys.readouterr().err
    assert _run(slides, tmp_path / "out", *fast_args, "--workers", "0", "--mpp", "0.5") == 0
    row = _manifest(tmp_path / "out")["tcga-cr-7395-01a-01-ts1"]
    assert row["status"] == "ok" and row["read_level"] == "1" and int(row["n_tiles"]) > 50


def test_bad_inputs_are_reported_and_the_rest_completes(shared_slides, syn_cohort, tmp_path, fast_args, write_tiff):
    slides = tmp_path / "in"
    _link(syn_cohort / "slides" / "syn_001_tumour.tif", slides)
    _link(shared_slides / "kidney-48-5.tif", slides)  # plain TIFF: not a WSI
    (slides / "notes.svs").write_text("not a slide")
    (slides / "cut.svs").write_bytes((shared_slides / "CMU-1-Small-Region.svs").read_bytes()[:300_000])
    write_tiff(slides / "blank.tif", np.full((1024, 1024, 3), 244, np.uint8))  # no tissue
    _link(shared_slides / "openslide-python-small.svs", slides)  # 16 x 16 px
    assert _run(slides, tmp_path / "out", *fast_args, "--workers", "1") == 1
    rows = _manifest(tmp_path / "out")
    assert rows["syn_001_tumour"]["status"] == "ok"
    expected = {
        "kidney-48-5": "not a whole-slide image",
        "notes": "not a slide",
        "cut": "cut.svs",
        "blank": "no tissue",
        "openslide-python-small": "smaller than one tile",
    }
    for sid, text in expected.items():
        assert rows[sid]["status"] == "failed" and text in rows[sid]["error"], (sid, rows[sid]["error"])
    files = sorted(p.name for p in (tmp_path / "out" / "features").iterdir())
    assert files == ["syn_001_tumour.h5"]  # nothing half-written under a final (or temporary) name


def test_plain_tiff_with_mpp_is_tiled(shared_slides, tmp_path, fast_args):
    slides = tmp_path / "in.csv"
    slides.write_text(f"path,mpp\n{shared_slides / 'kidney-48-5.tif'},0.5\n")
    code = _run(slides, tmp_path / "out", *fast_args, "--workers", "0", "--min-tissue", "0.05")
    row = _manifest(tmp_path / "out")["kidney-48-5"]
    assert row["mpp"] == "0.5" and (code, row["status"]) in ((0, "ok"), (1, "failed"))
    assert row["status"] == "ok" or "tissue" in row["error"]


def test_unwritable_output_and_unknown_encoder(syn_cohort, tmp_path, fast_args, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _run(syn_cohort / "slides", blocker / "out", *fast_args) == 1
    assert "not writable" in capsys.readouterr().err
    args = [a for a in fast_args]
    args[args.index("--encoder") + 1] = "no_such_net"
    assert _run(syn_cohort / "slides", tmp_path / "out", *args) == 1
    assert "unknown encoder 'no_such_net'" in capsys.readouterr().err


def test_resume_skips_same_params_and_recomputes_changed(syn_cohort, tmp_path, fast_args):
    out = tmp_path / "out"
    assert _run(syn_cohort / "slides", out, *fast_args, "--workers", "0") == 0
    first = {p.name: p.stat().st_mtime_ns for p in (out / "features").glob("*.h5")}
    assert len(first) == 4 and {r["status"] for r in _manifest(out).values()} == {"ok"}
    assert _run(syn_cohort / "slides", out, *fast_args, "--workers", "0") == 0
    assert {r["status"] for r in _manifest(out).values()} == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in (out / "features").glob("*.h5")} == first
    assert _run(syn_cohort / "slides", out, *fast_args, "--workers", "0", "--min-tissue", "0.9") == 0
    rows = _manifest(out)
    assert {r["status"] for r in rows.values()} == {"ok"}
    for sid, row in rows.items():
        meta = read_meta(out / "features" / f"{sid}.h5")
        assert meta.attrs["params_hash"] == row["params_hash"] and meta.n_patches == int(row["n_tiles"])


def test_shards_cover_every_slide_once(syn_cohort, tmp_path, fast_args):
    sources = discover(syn_cohort / "slides")
    parts = [shard(sources, i, 3) for i in range(3)]
    ids = [s.slide_id for part in parts for s in part]
    assert sorted(ids) == sorted(s.slide_id for s in sources) and len(ids) == len(set(ids)) == 4
    out = tmp_path / "out"
    for i in range(2):
        assert _run(syn_cohort / "slides", out, *fast_args, "--workers", "0", "--shard", f"{i}/2") == 0
    rows = _manifest(out)
    assert sorted(rows) == sorted(s.slide_id for s in sources)
    assert all(r["status"] == "ok" for r in rows.values())
    assert _run(syn_cohort / "slides", out, *fast_args, "--shard", "2/2") == 1


def test_multilevel_reads_equal_level0_reads_resized(syn_cohort):
    with open_slide(syn_cohort / "slides" / "syn_001_tumour.tif") as s:
        assert s.level_downsamples[:2] == (1.0, 4.0)
        rng = np.random.default_rng(0)
        for x, y in rng.integers(0, (1024 - 256) // 4, (6, 2)) * 4:  # on the level-1 pixel grid
            coarse = read_tile(s, int(x), int(y), 1, 64, 64)  # 64 px of level 1 (downsample 4)
            fine = read_tile(s, int(x), int(y), 0, 256, 64)  # 256 px of level 0, area-resized
            assert np.abs(coarse.astype(int) - fine.astype(int)).mean() < 1.0
        for x, y in rng.integers(0, 1024 - 256, (6, 2)):  # off the grid: at most a sub-pixel shift
            coarse = read_tile(s, int(x), int(y), 1, 64, 64).astype(int)
            fine = read_tile(s, int(x), int(y), 0, 256, 64).astype(int)
            assert np.abs(coarse - fine).mean() < 8 and np.abs(coarse.mean((0, 1)) - fine.mean((0, 1))).max() < 2


def test_config_file_gives_defaults(syn_cohort, tmp_path, fast_args):
    cfg = tmp_path / "pre.yaml"
    cfg.write_text("tile-size: 64\ntarget_mpp: 4.0\nencoder: resnet18\nweights: random\nresize: none\n")
    out = tmp_path / "out"
    code = acmil_main(
        [
            "preprocess",
            "--config",
            str(cfg),
            "--slides",
            str(syn_cohort / "slides"),
            "--out",
            str(out),
            "--glob",
            "syn_000*",
            "--no-progress",
            "--workers",
            "0",
            "--target-mpp",
            "2.0",
        ]
    )
    assert code == 0
    meta = read_meta(out / "features" / "syn_000_normal.h5")
    assert meta.attrs["mpp_target"] == 2.0 and meta.coord_attrs["patch_size"] == 64  # the flag wins over the file
    bad = tmp_path / "bad.yaml"
    bad.write_text("tile_sise: 64\n")
    assert acmil_main(["preprocess", "--config", str(bad), "--slides", ".", "--out", str(out)]) == 2


@pytest.mark.timeout(180)
def test_reader_workers_after_opencv_and_torch_ran_in_process(syn_cohort, tmp_path, fast_args):
    """Regression: a forked reader used to deadlock (cv2.setNumThreads) once the parent had used both libraries."""
    import cv2
    import torch

    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (500, 500), interpolation=cv2.INTER_AREA)
    torch.nn.functional.conv2d(torch.randn(8, 3, 224, 224), torch.randn(16, 3, 3, 3))
    args = list(fast_args)
    args[args.index("--target-mpp") + 1] = "1.0"  # read 128 px at level 0, resized to 64 in the worker
    assert _run(syn_cohort / "slides", tmp_path / "out", *args, "--workers", "1", "--glob", "syn_000*") == 0


def test_slide_ids_from_a_csv_that_differ_from_the_file_names(syn_cohort, tmp_path, fast_args):
    """The readers used to key batches by the file's stem, so a CSV naming a slide otherwise failed (KeyError)."""
    source = sorted((syn_cohort / "slides").glob("*.tif"))[0]
    slides = tmp_path / "in.csv"
    slides.write_text(f"path,slide_id\n{source},case_17_block_B\n")
    assert _run(slides, tmp_path / "out", *fast_args, "--workers", "0") == 0
    assert _manifest(tmp_path / "out")["case_17_block_B"]["status"] == "ok"
    assert (tmp_path / "out" / "features" / "case_17_block_B.h5").is_file()


def test_run_preprocess_by_keyword_returns_each_slides_outcome(syn_cohort, tmp_path):
    """The Python entry point (what the demo calls): a config by keyword in, per-slide outcomes and counts out."""
    from acmil.preprocessing.cli import NoSlidesError, PreprocessConfig, run_preprocess

    source = sorted((syn_cohort / "slides").glob("*.tif"))[0]
    (tmp_path / "not_a_slide.tif").write_bytes(b"not a tiff")
    slides = tmp_path / "in.csv"
    slides.write_text(f"path,slide_id\n{source},good\n{tmp_path / 'not_a_slide.tif'},bad\n")
    config = PreprocessConfig(
        slides=slides,
        out=tmp_path / "out",
        encoder="resnet18",
        weights="random",
        resize="none",
        tile_size=64,
        target_mpp=2.0,
        batch_size=16,
        progress="none",
        qc=False,
        workers=0,
    )
    result = run_preprocess(config)
    by_id = {r.slide_id: r for r in result.slides}
    assert result.counts == {"ok": 1, "skipped": 0, "failed": 1} and not result.ok  # exit code 1
    assert by_id["good"].n_tiles > 0 and result.n_tiles == by_id["good"].n_tiles
    assert result.feature_path("good").is_file() and not result.feature_path("bad").exists()
    assert "not_a_slide.tif" in by_id["bad"].error and "FAILED bad" in result.summary()
    assert _manifest(result.out)["good"]["status"] == "ok" and result.manifest == tmp_path / "out" / "manifest.csv"
    slides.write_text(f"path,slide_id\n{source},good\n")
    again = run_preprocess(config)
    assert again.ok and again.counts["skipped"] == 1 and again.n_tiles == 0  # resumed: nothing re-encoded
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoSlidesError, match="no slides found"):
        run_preprocess(dataclasses.replace(config, slides=tmp_path / "empty"))
