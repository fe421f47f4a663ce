"""`acmil convert`: CLAM (.h5 and .pt), TRIDENT and ACMIL-reference files -> format 1."""

from __future__ import annotations

import h5py
import numpy as np
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
