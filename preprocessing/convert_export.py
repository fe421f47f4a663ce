"""``acmil convert --to trident|clam``: format-1 slides written in TRIDENT's or CLAM's own layout.

- ``trident``: ``OUT/<slide>.h5`` with ``features`` float32 (N, D) carrying ``encoder``, ``name``,
  ``savetodir``, and ``coords`` int64 carrying ``patch_size``, ``patch_size_level0``,
  ``level0_magnification``, ``target_magnification``, ``overlap``, ``name``, ``savetodir``, ``level0_width``,
  ``level0_height`` (what TRIDENT's ``read_coords`` and its slide encoders read).
- ``clam``: ``OUT/h5_files/<slide>.h5`` (``features`` float32, ``coords`` int32, no attributes),
  ``OUT/pt_files/<slide>.pt`` (float32 tensor) and the patch file ``OUT/patches/<slide>.h5`` (``coords`` with
  ``patch_size``, ``patch_level`` = 0, ``downsample``, ``downsampled_level_dim``, ``level_dim``, ``name``,
  ``save_path``), as ``create_patches_fp.py`` + ``extract_features_fp.py`` leave them.

Every file is written under a temporary name in its folder and renamed when whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from acmil.atomic import atomic_path
from acmil.features import SlideFeatures, provenance
from acmil.geometry import level0_extent

TARGETS = ("trident", "clam")


def _magnification(mpp: Any) -> int | None:
    """Objective power of a µm/px (10x at 1 µm/px, 20x at 0.5, 40x at 0.25), as slide scanners label them."""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        return None
    return int(round(10.0 / value)) if value > 0 else None


def _level0_size(slide: SlideFeatures, patch: int) -> tuple[int, int]:
    # the patches' extent, without level0_width/height, is a lower bound of the slide's size
    coords = slide.coords if slide.n_patches else np.zeros((1, 2))
    return level0_extent(slide.coord_attrs, coords, patch)


def _h5(path: Path, datasets: dict[str, tuple[np.ndarray, dict[str, Any]]]) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, (data, attrs) in datasets.items():
            ds = h5.create_dataset(name, data=data)
            for key, value in attrs.items():
                ds.attrs[key] = "None" if value is None else value  # TRIDENT's own spelling of a missing value


def export_trident(slide: SlideFeatures, out_dir: Path) -> Path:
    ca, prov = slide.coord_attrs, provenance(slide.attrs)
    patch0 = int(slide.patch_size_level0 or 256)
    level0_mag = ca.get("level0_magnification") or _magnification(prov.get("mpp_level0"))
    target_mag = ca.get("target_magnification") or _magnification(prov.get("mpp_target")) or level0_mag
    patch = ca.get("patch_size")
    if patch is None:
        patch = int(round(patch0 * target_mag / level0_mag)) if level0_mag and target_mag else patch0
    width, height = _level0_size(slide, patch0)
    path = out_dir / f"{slide.slide_id}.h5"
    _h5(
        path,
        {
            "features": (
                slide.features.astype(np.float32),
                {
                    "encoder": str(prov.get("encoder", "unknown")),
                    "name": slide.slide_id,
                    "savetodir": str(out_dir),
                },
            ),
            "coords": (
                slide.coords.astype(np.int64),
                {
                    "patch_size": int(patch),
                    "patch_size_level0": patch0,
                    "level0_magnification": level0_mag,
                    "target_magnification": target_mag,
                    "overlap": int(ca.get("overlap", 0) or 0),
                    "name": slide.slide_id,
                    "savetodir": str(out_dir),
                    "level0_width": width,
                    "level0_height": height,
                },
            ),
        },
    )
    return path


def export_clam(slide: SlideFeatures, out_dir: Path) -> Path:
    import torch

    patch0 = int(slide.patch_size_level0 or 256)
    width, height = _level0_size(slide, patch0)
    if slide.n_patches and int(slide.coords.max()) >= 2**31:
        raise ValueError(f"{slide.slide_id}: coordinates beyond int32, which CLAM's h5_files use")
    _h5(
        out_dir / "h5_files" / f"{slide.slide_id}.h5",
        {
            "features": (slide.features.astype(np.float32), {}),
            "coords": (slide.coords.astype(np.int32), {}),
        },
    )
    pt = out_dir / "pt_files" / f"{slide.slide_id}.pt"
    with atomic_path(pt) as tmp:
        torch.save(torch.from_numpy(slide.features.astype(np.float32)), tmp)
    patches = out_dir / "patches"
    _h5(
        patches / f"{slide.slide_id}.h5",
        {
            "coords": (
                slide.coords.astype(np.int64),
                {
                    "patch_size": patch0,
                    "patch_level": 0,
                    "downsample": np.array([1.0, 1.0]),
                    "downsampled_level_dim": np.array([width, height]),
                    "level_dim": np.array([width, height]),
                    "name": slide.slide_id,
                    "save_path": str(patches),
                },
            ),
        },
    )
    return pt


def export(slide: SlideFeatures, target: str, out_dir: Path) -> Path:
    """Write one slide in ``target``'s layout under ``out_dir``; returns the main file written."""
    if target == "trident":
        return export_trident(slide, out_dir)
    if target == "clam":
        return export_clam(slide, out_dir)
    raise ValueError(f"unknown export layout {target!r} (choose {', '.join(TARGETS)})")
