"""Slide objects: one small class over OpenSlide, opened lazily, with the MPP resolved once.

``open_slide(path, mpp=None, mpp_fallback=None)`` is the factory. It returns a :class:`Slide` backed by
``openslide.OpenSlide`` for every format OpenSlide supports.

Plain images (a TIFF without pyramid or resolution that only ``openslide.open_slide()`` opens, as a PIL
``ImageSlide``) are *not* whole-slide images: they carry no physical scale, so tiles at "0.5 µm/px" would be
a guess. Decision: such a file is rejected with :class:`NotAWSIError` unless an MPP is given for it (``--mpp``
or the ``mpp`` column of a slide CSV); then it is processed as a one-level slide at that MPP.

MPP lookup order: an explicit per-slide override; ``openslide.mpp-x``/``-y``; ``aperio.MPP``; the TIFF
resolution tags (centimetre or inch); the fallback (``--mpp``). Values outside 0.05-20 µm/px (for example the
352.8 µm/px a default 72-dpi tag gives) are treated as missing. Without an MPP, :class:`MissingMPPError` names
the slide and says how to supply one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

import numpy as np

from acmil.geometry import MPP_RANGE, plausible_mpp

# Units in names (STAMP-style): level-0 pixels vs micrometres per pixel.
SlidePixels = NewType("SlidePixels", int)
MPP = NewType("MPP", float)  # micrometres per level-0 pixel


@dataclass(frozen=True)
class SlideSource:
    """A slide to process: its file, id, and an optional per-slide MPP override (what discovery finds)."""

    path: Path
    slide_id: str
    mpp: float | None = None


class SlideError(ValueError):
    """A slide cannot be used; the message names the file and the problem."""


class NotAWSIError(SlideError):
    """The file opens only as a plain image (no pyramid, no resolution) and no MPP was given for it."""


class MissingMPPError(SlideError):
    """The slide has no (plausible) MPP metadata and none was given."""


def _plausible(value: float | None) -> bool:
    return plausible_mpp(value) is not None


def _float(props: dict[str, str], key: str) -> float | None:
    try:
        return float(props[key])
    except (KeyError, ValueError):
        return None


def mpp_from_properties(props: dict[str, str]) -> tuple[float | None, str]:
    """(µm per level-0 pixel or None, where it came from) from OpenSlide properties."""
    x, y = _float(props, "openslide.mpp-x"), _float(props, "openslide.mpp-y")
    if x is not None:
        value = (x + y) / 2 if y is not None else x
        return (value, "openslide.mpp") if _plausible(value) else (None, f"implausible openslide.mpp-x {x:g}")
    value = _float(props, "aperio.MPP")
    if _plausible(value):
        return value, "aperio.MPP"
    res, unit = _float(props, "tiff.XResolution"), props.get("tiff.ResolutionUnit", "").lower()
    if res and unit in ("centimeter", "inch"):
        value = (1e4 if unit == "centimeter" else 25_400.0) / res
        return (value, "tiff.XResolution") if _plausible(value) else (None, f"implausible tiff resolution {value:g}")
    return None, "no MPP in the metadata"


class Slide:
    """A whole-slide image, opened lazily; use as a context manager (``with open_slide(p) as s: ...``).

    Attributes:
        path: the slide file.
        slide_id: file name without extension.
        mpp: µm per level-0 pixel (resolved at construction).
        mpp_source: where the MPP came from ("openslide.mpp", "aperio.MPP", "override", ...).
        kind: "openslide" (a pyramid OpenSlide reads) or "image" (a plain image given an MPP).
    """

    def __init__(self, path: Path, mpp: float, mpp_source: str, kind: str) -> None:
        self.path = Path(path)
        self.slide_id = slide_id_of(self.path)
        self.mpp = MPP(float(mpp))
        self.mpp_source = mpp_source
        self.kind = kind
        self._osr = None

    @property
    def handle(self):
        """The underlying openslide object (opened on first use)."""
        if self._osr is None:
            import openslide

            try:
                self._osr = (
                    openslide.OpenSlide(self.path) if self.kind == "openslide" else openslide.ImageSlide(self.path)
                )
            except Exception as err:  # noqa: BLE001 - any backend failure becomes a named slide error
                raise SlideError(f"{self.path}: cannot open ({err})") from err
        return self._osr

    @property
    def dimensions(self) -> tuple[SlidePixels, SlidePixels]:
        w, h = self.handle.dimensions
        return SlidePixels(int(w)), SlidePixels(int(h))

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.handle.level_downsamples)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(int(v) for v in d) for d in self.handle.level_dimensions)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self.handle.properties)

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB of a box whose top-left is level-0 (x, y); transparent -> white."""
        try:
            rgba = np.asarray(self.handle.read_region((int(x), int(y)), int(level), (int(width), int(height))))
        except Exception as err:  # noqa: BLE001 - corrupt tiles surface here, name the slide
            raise SlideError(f"{self.path}: cannot read region at ({x}, {y}) level {level} ({err})") from err
        return composite_white(rgba)

    def thumbnail(self, max_width: int, max_height: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB thumbnail that fits in the box, aspect ratio kept; read block-wise in bounded
        memory (see :mod:`.thumbnail`: under 200 MiB whatever the slide's size, none of its levels in one piece).

        Raises:
            SlideError: unreadable, or a level too large to make a thumbnail from (no pyramid).
        """
        from .thumbnail import ThumbnailTooCostly, read_thumbnail

        try:
            return read_thumbnail(self.handle, int(max_width), int(max_height), self.path)
        except ThumbnailTooCostly as err:
            raise SlideError(str(err)) from err
        except Exception as err:  # noqa: BLE001
            raise SlideError(f"{self.path}: cannot read a thumbnail ({type(err).__name__}: {err})") from err

    def close(self) -> None:
        if self._osr is not None:
            self._osr.close()
            self._osr = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: they reopen lazily
        return {**self.__dict__, "_osr": None}

    def __repr__(self) -> str:
        return f"Slide({self.slide_id!r}, mpp={self.mpp:g} [{self.mpp_source}], kind={self.kind})"


def composite_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA (premultiplied, as OpenSlide returns) over a white background -> RGB uint8."""
    if rgba.shape[-1] == 3:
        return np.ascontiguousarray(rgba)
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.uint16) + (255 - alpha[..., None].astype(np.uint16))
    return np.minimum(rgb, 255).astype(np.uint8)


def slide_id_of(path: str | os.PathLike) -> str:
    """The slide id: the file name without its extension (``a.b.svs`` -> ``a.b``)."""
    return Path(path).name.rsplit(".", 1)[0] if "." in Path(path).name else Path(path).name


def open_slide(path: str | os.PathLike, mpp: float | None = None, mpp_fallback: float | None = None) -> Slide:
    """Open a slide and resolve its MPP (see the module docstring for the rules).

    Args:
        path: the slide file.
        mpp: a per-slide override; used whatever the metadata says.
        mpp_fallback: used only when the metadata gives no plausible MPP (the ``--mpp`` option).

    Raises:
        SlideError: missing, unreadable or not an image; NotAWSIError / MissingMPPError as above.
    """
    import openslide

    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: slide file not found")
    if mpp is not None and not _plausible(mpp):
        raise SlideError(f"{path}: MPP override {mpp:g} is outside {MPP_RANGE[0]}-{MPP_RANGE[1]} µm/px")
    try:
        fmt = openslide.OpenSlide.detect_format(path)
    except Exception:  # noqa: BLE001 - treat like "unknown format"
        fmt = None
    if fmt is None:
        return _open_plain_image(path, mpp, mpp_fallback)
    try:
        osr = openslide.OpenSlide(path)
    except Exception as err:  # noqa: BLE001 - truncated / corrupt files fail here
        raise SlideError(
            f"{path}: OpenSlide cannot open this {fmt} file, it may be corrupt or truncated ({err})"
        ) from err
    try:
        props = dict(osr.properties)
    finally:
        osr.close()
    if mpp is not None:
        value, source = mpp, "override"
    else:
        value, source = mpp_from_properties(props)
        if value is None:
            if mpp_fallback is None:
                raise MissingMPPError(
                    f"{path}: slide has no usable MPP ({source}); give one with --mpp X (µm/px) or an 'mpp' column "
                    "in the --slides CSV"
                )
            if not _plausible(mpp_fallback):
                raise SlideError(f"{path}: --mpp {mpp_fallback:g} is outside {MPP_RANGE[0]}-{MPP_RANGE[1]} µm/px")
            value, source = mpp_fallback, "--mpp"
    return Slide(path, value, source, "openslide")


def _open_plain_image(path: Path, mpp: float | None, mpp_fallback: float | None) -> Slide:
    import openslide

    try:
        osr = openslide.open_slide(path)  # ImageSlide (PIL) when OpenSlide itself refuses
    except Exception as err:  # noqa: BLE001
        raise SlideError(f"{path}: not a slide: neither OpenSlide nor PIL can read it ({err})") from err
    size = osr.dimensions
    osr.close()
    source = "override" if mpp is not None else "--mpp"
    mpp = mpp if mpp is not None else mpp_fallback
    if mpp is None:
        raise NotAWSIError(
            f"{path}: not a whole-slide image: OpenSlide opens it only as a plain {size[0]}x{size[1]} image "
            "(no pyramid, no resolution); pass --mpp X (or an 'mpp' column in the --slides CSV) to tile it anyway"
        )
    if not _plausible(mpp):
        raise SlideError(f"{path}: MPP {mpp:g} is outside {MPP_RANGE[0]}-{MPP_RANGE[1]} µm/px")
    return Slide(path, mpp, source, "image")
