"""Synthetic H&E-like whole-slide images with planted tumour regions and ground-truth masks.

For tests, benchmarks and the demo: real slides with pixel-level annotations cannot ship with the code.

Command line::

    python -m acmil.synthetic.slides --out DIR --n-slides 24 [--seed 0] [--width 4608 --height 3584]
                                    [--mpp 0.5] [--compression zlib|jpeg|none]

Output layout::

    DIR/slides/<slide_id>.tif   tiled (256 px) pyramidal TIFF, levels at downsamples 1, 4, 16, ... ; the
                                resolution tag gives the µm/px, which OpenSlide reads as ``openslide.mpp-x``
                                (vendor ``generic-tiff``). zlib compression by default (jpeg needs imagecodecs).
    DIR/masks/<slide_id>.png    binary tumour mask (0 / 255), one pixel per MASK_DOWNSAMPLE x MASK_DOWNSAMPLE
                                level-0 pixels (16 by default); the downsample is also stored in the PNG text
                                chunk ``acmil_downsample``. Normal slides get an all-zero mask.
    DIR/labels.csv              slide_id,label,case_id with balanced classes "normal" / "tumour".

Slides: a white background with a few tissue blobs (pink stroma with small sparse nuclei); slides labelled
"tumour" carry 1-3 regions of dense, large, dark-violet nuclei on a lavender background, a texture an
ImageNet CNN separates from the normal tissue easily. The default size (4608 x 3584 px at 0.5 µm/px) gives
about 100-200 tissue tiles of 256 px; 24 such slides take a few seconds. ``--width/--height`` make bigger
ones (the benchmark uses ~50k x 40k, tens of thousands of tiles); pixels are rendered tile by tile, so memory
stays small.

Python API::

    generate_cohort(out, n_slides, seed=0, width=..., height=..., mpp=0.5, workers=None) -> list[SyntheticSlide]
    generate_slide(path, mask_path, tumour: bool, seed, width, height, mpp=0.5) -> SyntheticSlide
    read_mask(path) -> (mask (h, w) bool, downsample int)
    tumour_fraction(mask_path_or_array, coords (N, 2) level-0 x,y, patch_size_level0, downsample=None)
        -> (N,) float64 in [0, 1]: the fraction of each tile's area that lies in the tumour mask.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, PngImagePlugin

from acmil import geometry
from acmil.atomic import atomic_path, write_csv

MASK_DOWNSAMPLE = 16  # level-0 pixels per mask pixel (also the resolution of the generating fields)
TILE = 256  # TIFF tile side; also the rendering unit
_CELL = 64  # nuclei are placed on a global grid of 64 px cells so tiles join without seams
_MAX_NUCLEI = 12  # candidate nuclei per cell (tumour keeps all, normal tissue keeps a few)

_WHITE = np.array([243, 242, 246], np.float32)
_STROMA = np.array([234, 168, 200], np.float32)  # eosin pink
_TUMOUR_BG = np.array([176, 128, 196], np.float32)  # lavender, haematoxylin-rich
_NUCLEUS = (96, 52, 142)
_TUMOUR_NUCLEUS = (58, 22, 96)


@dataclass
class SyntheticSlide:
    """One generated slide: paths, label and the level-0 size."""

    slide_id: str
    path: Path
    mask_path: Path
    label: str
    width: int
    height: int
    tumour_fraction: float  # fraction of tissue area that is tumour


def _hash_uniform(*keys: np.ndarray) -> np.ndarray:
    """Deterministic uniform [0, 1) values from integer keys (splitmix64-style mixing, vectorised)."""
    h = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for k in keys:
            h = (h ^ np.asarray(k).astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
            h = h ^ (h >> np.uint64(31))
            h = h * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(29))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _blob_field(rng: np.random.Generator, shape: tuple[int, int], n: int, scale: float) -> np.ndarray:
    """Sum of n random anisotropic Gaussians plus smooth noise; (h, w) float32 in about [0, 1.5]."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        sy, sx = rng.uniform(0.5, 1.0, 2) * scale * min(h, w)
        theta = rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / sx
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / sy
        field += np.exp(-(u * u + v * v))
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(1.0, min(h, w) / 25))
    return field + 0.25 * noise / (noise.std() + 1e-6)


def _fields(rng: np.random.Generator, width: int, height: int, tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution (one pixel per MASK_DOWNSAMPLE) tissue and tumour fields; > 0.5 means inside."""
    shape = (-(-height // MASK_DOWNSAMPLE), -(-width // MASK_DOWNSAMPLE))
    tissue = _blob_field(rng, shape, int(rng.integers(3, 6)), 0.36)
    tumour_field = np.zeros(shape, np.float32)
    if tumour:
        for _ in range(50):  # place 1-3 regions centred on tissue; retry until they cover some tissue
            inside = np.argwhere(tissue > 0.9)
            if not len(inside):
                inside = np.argwhere(tissue > 0.5)
            tumour_field[:] = 0
            yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
            for _ in range(int(rng.integers(1, 4))):
                cy, cx = inside[rng.integers(len(inside))]
                r = rng.uniform(0.07, 0.13) * min(shape)
                tumour_field += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r))
            frac = ((tumour_field > 0.5) & (tissue > 0.5)).sum() / max(1, (tissue > 0.5).sum())
            if 0.08 <= frac <= 0.45:
                break
        tumour_field = np.where(tissue > 0.5, tumour_field, 0).astype(np.float32)
    return tissue, tumour_field


def _sample(field: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Bilinearly sample a low-res field at the level-0 pixel centres of the box (x0, y0, w, h)."""
    s = 1.0 / MASK_DOWNSAMPLE
    m = np.array([[s, 0, (x0 + 0.5) * s - 0.5], [0, s, (y0 + 0.5) * s - 0.5]], np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(field, m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)


class _Renderer:
    """Renders level-0 tiles of one slide from its low-res fields (deterministic per slide seed)."""

    def __init__(self, seed: int, tissue: np.ndarray, tumour: np.ndarray) -> None:
        self.seed = seed
        self.tissue = tissue
        self.tumour = tumour
        rng = np.random.default_rng(seed)
        shade = cv2.GaussianBlur(rng.standard_normal(tissue.shape).astype(np.float32), (0, 0), 2.0)
        shade = (shade / (shade.std() + 1e-6))[..., None]
        # the base colour at low resolution: one warpAffine per tile then gives smooth level-0 colour
        in_tissue = np.clip((tissue - 0.45) * 10, 0, 1)[..., None]
        in_tumour = np.clip((tumour - 0.45) * 10, 0, 1)[..., None]
        colour = _STROMA * (1 - in_tumour) + _TUMOUR_BG * in_tumour + 8 * shade
        self.colour = np.ascontiguousarray(_WHITE * (1 - in_tissue) + colour * in_tissue, dtype=np.float32)

    def tile(self, x0: int, y0: int) -> np.ndarray:
        """(TILE, TILE, 3) uint8 RGB of the level-0 box starting at (x0, y0)."""
        lx0, ly0 = max(0, x0 // MASK_DOWNSAMPLE - 1), max(0, y0 // MASK_DOWNSAMPLE - 1)
        lx1, ly1 = (x0 + TILE) // MASK_DOWNSAMPLE + 2, (y0 + TILE) // MASK_DOWNSAMPLE + 2
        if self.tissue[ly0:ly1, lx0:lx1].max() <= 0.45:  # background only: cheap path
            return np.broadcast_to(_WHITE.astype(np.uint8), (TILE, TILE, 3)).copy()
        img = np.clip(_sample(self.colour, x0, y0, TILE, TILE), 0, 255).astype(np.uint8)
        self._nuclei(img, x0, y0)
        return img

    def _nuclei(self, img: np.ndarray, x0: int, y0: int) -> None:
        """Draw the nuclei of every cell that can reach the tile (neighbours too, so edges join)."""
        c0x, c0y = x0 // _CELL - 1, y0 // _CELL - 1
        n = TILE // _CELL + 3
        cy, cx, k = np.meshgrid(np.arange(c0y, c0y + n), np.arange(c0x, c0x + n), np.arange(_MAX_NUCLEI), indexing="ij")
        cx, cy, k = cx.ravel(), cy.ravel(), k.ravel()
        u = [_hash_uniform(cx, cy, k, np.full_like(k, self.seed * 8 + j)) for j in range(6)]
        px = (cx + u[0]) * _CELL
        py = (cy + u[1]) * _CELL
        lx = np.clip((px / MASK_DOWNSAMPLE - 0.5).astype(int), 0, self.tissue.shape[1] - 1)
        ly = np.clip((py / MASK_DOWNSAMPLE - 0.5).astype(int), 0, self.tissue.shape[0] - 1)
        tissue, tumour = self.tissue[ly, lx] > 0.5, self.tumour[ly, lx] > 0.5
        keep = tissue & (tumour | (u[2] < 0.25))  # normal tissue keeps ~3 nuclei per cell, tumour all 12
        for i in np.flatnonzero(keep):
            x, y = int(px[i] - x0), int(py[i] - y0)
            if tumour[i]:
                axes = (int(6 + 6 * u[3][i]), int(5 + 5 * u[4][i]))
                colour = _TUMOUR_NUCLEUS
            else:
                axes = (int(3 + 2 * u[3][i]), int(2 + 2 * u[4][i]))
                colour = _NUCLEUS
            cv2.ellipse(img, (x, y), axes, float(u[5][i] * 180), 0, 360, colour, -1, cv2.LINE_AA)


def _pyramid_downsamples(width: int, height: int) -> list[int]:
    """Downsamples 1, 4, 16, ... while the level stays at least 128 px on its short side."""
    out = [1]
    while min(width, height) // (out[-1] * 4) >= 128:
        out.append(out[-1] * 4)
    return out


def _write_tiff(path: Path, renderer: _Renderer, width: int, height: int, mpp: float, compression: str) -> None:
    """Stream level 0 tile by tile, keeping a 1/4 image in memory for the reduced levels; written atomically."""
    downs = _pyramid_downsamples(width, height)
    small = np.zeros((-(-height // 4), -(-width // 4), 3), np.uint8) if len(downs) > 1 else None
    res_cm = 1e4 / mpp  # pixels per centimetre; OpenSlide derives openslide.mpp-x from it

    def tiles() -> Iterator[np.ndarray]:
        for y0 in range(0, height, TILE):
            for x0 in range(0, width, TILE):
                t = renderer.tile(x0, y0)
                if small is not None:
                    s = cv2.resize(t, (TILE // 4, TILE // 4), interpolation=cv2.INTER_AREA)
                    ys, xs = y0 // 4, x0 // 4
                    h, w = small[ys : ys + TILE // 4, xs : xs + TILE // 4].shape[:2]
                    small[ys : ys + h, xs : xs + w] = s[:h, :w]
                yield t

    comp = None if compression == "none" else compression
    args = {"level": 1} if compression == "zlib" else ({"level": 90} if compression == "jpeg" else None)
    common = dict(
        tile=(TILE, TILE), photometric="rgb", compression=comp, compressionargs=args, resolutionunit="CENTIMETER"
    )
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=width * height * 3 > 2**31) as tif:
        tif.write(tiles(), shape=(height, width, 3), dtype=np.uint8, resolution=(res_cm, res_cm), **common)
        for d in downs[1:]:
            level = (
                small if d == 4 else cv2.resize(small, (-(-width // d), -(-height // d)), interpolation=cv2.INTER_AREA)
            )
            tif.write(level, subfiletype=1, resolution=(res_cm / d, res_cm / d), **common)


def generate_slide(
    path: str | os.PathLike,
    mask_path: str | os.PathLike,
    tumour: bool,
    seed: int,
    width: int = 4608,
    height: int = 3584,
    mpp: float = 0.5,
    compression: str = "zlib",
) -> SyntheticSlide:
    """Write one synthetic slide and its tumour mask PNG (see the module docstring)."""
    path, mask_path = Path(path), Path(mask_path)
    rng = np.random.default_rng(seed)
    tissue, tumour_field = _fields(rng, width, height, tumour)
    _write_tiff(path, _Renderer(seed, tissue, tumour_field), width, height, mpp, compression)
    mask = (tumour_field > 0.5) & (tissue > 0.5)
    info = PngImagePlugin.PngInfo()
    info.add_text("acmil_downsample", str(MASK_DOWNSAMPLE))
    with atomic_path(mask_path) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG", pnginfo=info)
    frac = float(mask.sum() / max(1, (tissue > 0.5).sum()))
    label = "tumour" if tumour else "normal"
    return SyntheticSlide(path.stem, path, mask_path, label, width, height, frac)


def _generate_job(job: tuple) -> SyntheticSlide:
    return generate_slide(*job)


def generate_cohort(
    out: str | os.PathLike,
    n_slides: int,
    seed: int = 0,
    width: int = 4608,
    height: int = 3584,
    mpp: float = 0.5,
    compression: str = "zlib",
    workers: int | None = None,
) -> list[SyntheticSlide]:
    """Write ``n_slides`` slides (alternating normal / tumour), masks and labels.csv under ``out``.

    Slides are generated in ``workers`` processes (default: one per CPU); the result does not depend on it.
    """
    out = Path(out)
    (out / "slides").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    jobs = []
    for i in range(n_slides):
        tumour = i % 2 == 1
        sid = f"syn_{i:03d}_{'tumour' if tumour else 'normal'}"
        paths = (out / "slides" / f"{sid}.tif", out / "masks" / f"{sid}.png")
        jobs.append((*paths, tumour, seed * 100_003 + i, width, height, mpp, compression))
    workers = min(workers if workers is not None else (os.cpu_count() or 1), n_slides)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            slides = list(pool.map(_generate_job, jobs))
    else:
        slides = [generate_slide(*job) for job in jobs]
    rows = [{"slide_id": s.slide_id, "label": s.label, "case_id": f"case_{s.slide_id[4:7]}"} for s in slides]
    write_csv(out / "labels.csv", rows, ["slide_id", "label", "case_id"])
    return slides


def read_mask(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A mask PNG as (h, w) bool and its downsample (level-0 px per mask px; :func:`acmil.geometry.read_mask`)."""
    mask, stated = geometry.read_mask(path)
    return mask, int(stated) if stated else MASK_DOWNSAMPLE


def tumour_fraction(
    mask: str | os.PathLike | np.ndarray,
    coords: np.ndarray,
    patch_size_level0: float,
    downsample: float | None = None,
) -> np.ndarray:
    """Fraction of each tile's area inside the tumour mask.

    Args:
        mask: a mask PNG path (downsample read from it) or a (h, w) bool/0-1 array (then give ``downsample``).
        coords: (N, 2) level-0 (x, y) of the tiles' top-left corners.
        patch_size_level0: tile side in level-0 pixels.
        downsample: level-0 pixels per mask pixel (default: from the PNG, else MASK_DOWNSAMPLE).

    Returns:
        (N,) float64 in [0, 1]; parts of a tile outside the mask count as non-tumour.
    """
    if isinstance(mask, (str, os.PathLike)):
        arr, down = read_mask(mask)
        downsample = downsample or down
    else:
        arr = np.asarray(mask) > 0
        downsample = downsample or MASK_DOWNSAMPLE
    return geometry.tile_coverage(arr, coords, patch_size_level0, downsample)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m acmil.synthetic.slides", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (slides/, masks/, labels.csv)")
    p.add_argument("--n-slides", type=int, default=24, help="number of slides, half normal and half tumour")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=4608, help="level-0 width in pixels")
    p.add_argument("--height", type=int, default=3584, help="level-0 height in pixels")
    p.add_argument("--mpp", type=float, default=0.5, help="µm per level-0 pixel, written to the resolution tag")
    p.add_argument("--compression", choices=["zlib", "jpeg", "none"], default="zlib", help="jpeg needs imagecodecs")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    args = p.parse_args(argv)
    if args.n_slides < 1 or args.width < TILE or args.height < TILE or args.mpp <= 0:
        p.error("--n-slides >= 1, --width/--height >= 256 and --mpp > 0 are required")
    slides = generate_cohort(
        args.out, args.n_slides, args.seed, args.width, args.height, args.mpp, args.compression, args.workers
    )
    n_t = sum(s.label == "tumour" for s in slides)
    print(f"wrote {len(slides)} slides ({n_t} tumour, {len(slides) - n_t} normal) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
