"""`acmil convert`: CLAM (.h5 and .pt), TRIDENT and ACMIL-reference files -> format 1."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from acmil.cli import main as acmil_main
from acmil.features import read_features, read_meta


def _grid(n: int, step: int = 512) -> np.ndarray:
    return np.array([[(i % 4) * step, (i // 4) * step] for i in range(n)], np.int64)


def test_convert_all_kinds(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    f_clam, f_tri, f_pt = (rng.normal(size=(n, 8)).astype(np.float32) for n in (6, 5, 7))
    with h5py.File(src / "clam_slide.h5", "w") as h5:  # CLAM: no attributes
        h5["features"], h5["coords"] = f_clam, _grid(6)
    with h5py.File(src / "trident_slide.h5", "w") as h5:
        h5["features"], h5["coords"] = f_tri.astype(np.float16), _grid(5, 224)
        h5["coords"].attrs.update({"patch_size": 224, "patch_size_level0": 224, "target_magnification": 20})
    with h5py.File(tmp_path / "acmil_ref.h5", "w") as h5:  # one file, many slides
        for sid, n in (("ref_a", 3), ("ref_b", 4)):
            g = h5.create_group(sid)
            g["feat"], g["coords"] = rng.normal(size=(n, 8)).astype(np.float32), _grid(n, 256)
            g.attrs["label"] = 1
    torch.save(torch.from_numpy(f_pt), src / "pt_slide.pt")
    coords_dir = tmp_path / "patches"
    coords_dir.mkdir()
    with h5py.File(coords_dir / "pt_slide.h5", "w") as h5:
        h5["coords"] = _grid(7, 1024)
        h5["coords"].attrs.update({"patch_size": 256, "patch_level": 2})
    (src / "broken.h5").write_bytes(b"not hdf5")

    out = tmp_path / "out"
    code = acmil_main(
        [
            "convert",
            str(src),
            str(tmp_path / "acmil_ref.h5"),
            "--out",
            str(out),
            "--coords",
            str(coords_dir),
            "--encoder",
            "resnet50_trunc",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "broken.h5" in err and "5 slide(s) written" in err

    clam = read_features(out / "clam_slide.h5")
    assert np.array_equal(clam.features, f_clam) and np.array_equal(clam.coords, _grid(6))
    assert clam.coord_attrs["patch_size_level0"] == 512 and clam.coord_attrs["patch_size_level0_inferred"]
    assert clam.attrs["encoder"] == "resnet50_trunc" and '"kind": "clam"' in clam.attrs["converted_from"]
    tri = read_features(out / "trident_slide.h5")
    assert tri.features.dtype == np.float32 and tri.coord_attrs["target_magnification"] == 20
    assert np.allclose(tri.features, f_tri, atol=1e-2)
    pt = read_features(out / "pt_slide.h5")
    assert np.array_equal(pt.features, f_pt) and pt.coord_attrs["patch_size_level0"] == 1024  # 256 px at level 2
    for sid, n in (("ref_a", 3), ("ref_b", 4)):
        meta = read_meta(out / f"{sid}.h5")
        assert meta.kind == "format1" and meta.n_patches == n and meta.slide_id == sid

    # existing outputs are kept unless --overwrite
    assert acmil_main(["convert", str(src / "clam_slide.h5"), "--out", str(out)]) == 0
    assert "exists" in capsys.readouterr().err
    assert (
        acmil_main(
            [
                "convert",
                str(src / "clam_slide.h5"),
                "--out",
                str(out),
                "--overwrite",
                "--patch-size-level0",
                "256",
                "--mpp",
                "0.25",
            ]
        )
        == 0
    )
    again = read_features(out / "clam_slide.h5")
    assert again.coord_attrs["patch_size_level0"] == 256 and again.attrs["mpp_level0"] == 0.25


def test_pt_without_coords_is_a_clear_error(tmp_path, capsys):
    torch.save(torch.zeros(3, 4), tmp_path / "s.pt")
    assert acmil_main(["convert", str(tmp_path / "s.pt"), "--out", str(tmp_path / "o")]) == 1
    assert "--coords" in capsys.readouterr().err


# --- Golden files built from the facts of each tool's code (no files copied from elsewhere) -------------------


def _clam_run(
    root: Path,
    slides: dict,
    patch_size: int = 256,
    step: int = 256,
    level: int = 0,
    downsample: tuple[float, float] = (1.0, 1.0),
    level_dim: tuple[int, int] = (4096, 3072),
) -> Path:
    """CLAM's create_patches_fp.py + extract_features_fp.py output: ``root/patches`` and ``root/feats``."""
    (root / "patches").mkdir(parents=True)
    for sub in ("h5_files", "pt_files"):
        (root / "feats" / sub).mkdir(parents=True)
    for name, feats in slides.items():
        n = feats.shape[0]
        step0 = int(step * downsample[0])  # CLAM's level-0 grid step: step_size x int(downsample)
        coords = np.array([[(i % 5) * step0, (i // 5) * step0] for i in range(n)], np.int64)
        with h5py.File(root / "patches" / f"{name}.h5", "w") as h5:
            ds = h5.create_dataset("coords", data=coords)
            ds.attrs.update(
                {
                    "patch_size": patch_size,
                    "patch_level": level,
                    "downsample": np.array(downsample),
                    "downsampled_level_dim": np.array(level_dim),
                    "level_dim": np.array(level_dim),
                    "name": name,
                    "save_path": str(root / "patches"),
                }
            )
        with h5py.File(root / "feats" / "h5_files" / f"{name}.h5", "w") as h5:
            h5["features"], h5["coords"] = feats.astype(np.float32), coords.astype(np.int32)
        torch.save(torch.from_numpy(feats.astype(np.float32)), root / "feats" / "pt_files" / f"{name}.pt")
    return root


def _trident_file(path: Path, feats: np.ndarray, encoder: str = "conch_v15", patch: int = 512) -> Path:
    """TRIDENT's features file: encoder/name/savetodir on ``features``; patching attributes on ``coords``."""
    n = feats.shape[0] if feats.ndim == 2 else 0
    coords = np.array([[(i % 4) * patch, (i // 4) * patch] for i in range(n)], np.int64).reshape(n, 2)
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("features", data=feats.astype(np.float32))
        ds.attrs.update({"encoder": encoder, "name": path.stem, "savetodir": str(path.parent)})
        cs = h5.create_dataset("coords", data=coords)
        cs.attrs.update(
            {
                "patch_size": 256,
                "patch_size_level0": patch,
                "level0_magnification": 40,
                "target_magnification": 20,
                "overlap": 0,
                "name": path.stem,
                "savetodir": str(path.parent),
                "level0_width": 4 * patch,
                "level0_height": 3 * patch,
            }
        )
    return path


def _feats(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_clam_pt_files_with_clams_own_level_1_patch_files(tmp_path, capsys):
    """Defects 3 and 4: ``downsample`` is an array (was: "can only convert an array of size 1 to a Python
    scalar"), and a level-1 patch of 256 px at downsample 4 covers 1024 level-0 px (was: 256 * 2**1 = 512)."""
    run = _clam_run(tmp_path / "clam", {"s1": _feats(7)}, level=1, downsample=(4.0, 4.0), level_dim=(1024, 768))
    out = tmp_path / "out"
    code = acmil_main(["convert", str(run / "feats" / "pt_files"), "--coords", str(run / "patches"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    slide = read_features(out / "s1.h5")
    assert slide.coord_attrs["patch_size_level0"] == 1024 and "patch_size_level0_inferred" not in slide.coord_attrs
    assert (slide.coord_attrs["level0_width"], slide.coord_attrs["level0_height"]) == (4096, 3072)
    assert np.array_equal(slide.features, _feats(7))


def test_clam_overlapping_patches_take_the_patch_size_from_the_patch_file(tmp_path, capsys):
    """Defect 6: ``--step_size 128 --patch_size 256`` is a 256 px patch (the grid says 128)."""
    run = _clam_run(tmp_path / "clam", {"s1": _feats(9)}, patch_size=256, step=128)
    out = tmp_path / "out"
    assert (
        acmil_main(["convert", str(run / "feats" / "h5_files"), "--coords", str(run / "patches"), "--out", str(out)])
        == 0
    )
    assert read_features(out / "s1.h5").coord_attrs["patch_size_level0"] == 256
    capsys.readouterr()
    # without the patch file the grid is the last resort, and the user is told
    assert acmil_main(["convert", str(run / "feats" / "h5_files"), "--out", str(tmp_path / "o2")]) == 0
    assert "patch size 128 px inferred from the coordinate grid" in capsys.readouterr().err
    inferred = read_features(tmp_path / "o2" / "s1.h5").coord_attrs
    assert inferred["patch_size_level0"] == 128 and inferred["patch_size_level0_inferred"]


def test_clam_feat_dir_is_recognised_and_nothing_converted_is_an_error(tmp_path, capsys):
    """Defect 7: CLAM's ``feat_dir`` (h5_files/ + pt_files/) converted 0 slides and exited 0."""
    run = _clam_run(tmp_path / "clam", {"a": _feats(5, seed=1), "b": _feats(6, seed=2)})
    out = tmp_path / "out"
    assert acmil_main(["convert", str(run / "feats"), "--coords", str(run / "patches"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "reading " + str(run / "feats" / "h5_files") in err and "2 slide(s) written" in err
    assert '"kind": "clam"' in read_features(out / "a.h5").attrs["converted_from"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert acmil_main(["convert", str(empty), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "nothing to convert" in err and "FAILED nothing converted" in err


def test_trident_encoder_name_is_kept_and_empty_slides_are_skipped(tmp_path, capsys):
    """Defect 5: TRIDENT's encoder (on the ``features`` dataset) was recorded as 'unknown'."""
    src = tmp_path / "trident"
    src.mkdir()
    _trident_file(src / "t1.h5", _feats(6))
    _trident_file(src / "empty.h5", np.zeros((0,), np.float32))  # TRIDENT's file of a slide without tissue
    out = tmp_path / "out"
    assert acmil_main(["convert", str(src), "--out", str(out), "--mpp", "0.25"]) == 0
    err = capsys.readouterr().err
    assert "empty.h5: empty slide (0 patches" in err and not (out / "empty.h5").exists()
    slide = read_features(out / "t1.h5")
    assert slide.attrs["encoder"] == "conch_v15" and slide.coord_attrs["patch_size_level0"] == 512
    assert slide.attrs["mpp_level0"] == 0.25 and slide.attrs["mpp_target"] == 0.5  # 40x -> 20x


def test_reference_labels_become_labels_csv_and_mpp_comes_from_the_slide(tmp_path, capsys, write_tiff):
    """Defect 8: the reference's per-slide ``label`` was lost; µm/px is read from ``--slides`` when there."""
    ref = tmp_path / "patch_feats_pretrain_medical_ssl.h5"
    with h5py.File(ref, "w") as h5:  # Step2_feature_extract.py: float16 feat, coords, group attr label
        for sid, n, label in (("tumor_001", 3, 1), ("normal_002", 4, 0)):
            g = h5.create_group(sid)
            g.create_dataset("feat", data=_feats(n).astype(np.float16))
            g.create_dataset("coords", data=np.array([[i * 512, 0] for i in range(n)], np.int64))
            g.attrs["label"] = label
    out = tmp_path / "out"
    (out).mkdir()
    (out / "labels.csv").write_text("slide_id,label\nold_slide,1\n")
    slides = tmp_path / "slides"
    slides.mkdir()
    write_tiff(slides / "tumor_001.tif", np.full((64, 64, 3), 200, np.uint8), mpp=0.5)
    assert acmil_main(["convert", str(ref), "--out", str(out), "--slides", str(slides)]) == 0
    rows = (out / "labels.csv").read_text().splitlines()
    assert rows == ["slide_id,label", "normal_002,0", "old_slide,1", "tumor_001,1"]
    assert read_features(out / "tumor_001.h5").attrs["mpp_level0"] == pytest.approx(0.5)
    assert "mpp_level0" not in read_features(out / "normal_002.h5").attrs  # no slide, no --mpp: not invented


@pytest.mark.parametrize("layout", ["trident", "clam"])
def test_export_to_trident_and_clam_reads_back_with_their_layout(tmp_path, capsys, layout):
    """``acmil convert --to trident|clam`` writes what those tools read; converting back gives the same slide."""
    ours = tmp_path / "ours"
    ours.mkdir()
    coords = np.array([[(i % 3) * 448, (i // 3) * 448] for i in range(6)], np.int64)
    from acmil.features import write_features

    write_features(
        ours / "s1.h5",
        _feats(6),
        coords,
        {"slide_id": "s1", "encoder": "resnet50_trunc", "mpp_level0": 0.25, "mpp_target": 0.5},
        {"patch_size": 224, "patch_size_level0": 448, "level0_width": 2000, "level0_height": 1500},
    )
    out = tmp_path / layout
    assert acmil_main(["convert", str(ours), "--to", layout, "--out", str(out)]) == 0
    back = tmp_path / "back"
    if layout == "trident":
        with h5py.File(out / "s1.h5", "r") as h5:
            assert h5["features"].dtype == np.float32 and h5["features"].attrs["encoder"] == "resnet50_trunc"
            assert set(h5["features"].attrs) == {"encoder", "name", "savetodir"}
            assert h5["coords"].dtype == np.int64 and set(h5["coords"].attrs) == {
                "patch_size",
                "patch_size_level0",
                "level0_magnification",
                "target_magnification",
                "overlap",
                "name",
                "savetodir",
                "level0_width",
                "level0_height",
            }
            ca = dict(h5["coords"].attrs)
            assert (
                ca["patch_size"],
                ca["patch_size_level0"],
                ca["level0_magnification"],
                ca["target_magnification"],
            ) == (224, 448, 40, 20)
        assert acmil_main(["convert", str(out), "--out", str(back)]) == 0
    else:
        with h5py.File(out / "h5_files" / "s1.h5", "r") as h5:
            assert h5["features"].dtype == np.float32 and h5["coords"].dtype == np.int32
            assert not len(h5.attrs) and not len(h5["coords"].attrs) and not len(h5["features"].attrs)
        pt = torch.load(out / "pt_files" / "s1.pt", weights_only=True)
        assert pt.dtype == torch.float32 and np.array_equal(pt.numpy(), _feats(6))
        with h5py.File(out / "patches" / "s1.h5", "r") as h5:
            ca = dict(h5["coords"].attrs)
            assert ca["patch_size"] == 448 and ca["patch_level"] == 0 and list(ca["downsample"]) == [1.0, 1.0]
            assert list(ca["level_dim"]) == [2000, 1500]
        assert acmil_main(["convert", str(out), "--coords", str(out / "patches"), "--out", str(back)]) == 0
    slide = read_features(back / "s1.h5")
    assert np.array_equal(slide.features, _feats(6)) and np.array_equal(slide.coords, coords)
    assert slide.coord_attrs["patch_size_level0"] == 448 and "patch_size_level0_inferred" not in slide.coord_attrs
    assert (slide.coord_attrs["level0_width"], slide.coord_attrs["level0_height"]) == (2000, 1500)


def test_run_convert_by_keyword_and_print_config_round_trip(tmp_path, capsys):
    from acmil.command import config_from
    from acmil.preprocessing.convert import ConvertConfig, build_parser, run_convert

    feats = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    with h5py.File(tmp_path / "clam_a.h5", "w") as h5:
        h5["features"], h5["coords"] = feats, _grid(4)
    config = ConvertConfig(inputs=[tmp_path / "clam_a.h5"], out=tmp_path / "o", patch_size_level0=512, mpp=0.5)
    result = run_convert(config)
    assert result.ok and result.written == ["clam_a"] and result.kept == [] and result.labels_csv is None
    assert read_features(tmp_path / "o" / "clam_a.h5").attrs["mpp_level0"] == 0.5
    assert run_convert(config).kept == ["clam_a"]  # already there, no --overwrite

    argv = [str(tmp_path / "clam_a.h5"), "--out", str(tmp_path / "o"), "--patch-size-level0", "512", "--mpp", "0.5"]
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*argv, "--print_config"])
    assert info.value.code == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    assert config_from(build_parser().parse_args(["--config", str(tmp_path / "c.yaml")]), ConvertConfig) == config
