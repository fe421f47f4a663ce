"""The service's working parts: the loaded model, per-slide predictions (cached) and slide images.

Routers call these methods and turn the results into response models; nothing here knows HTTP except
through :mod:`acmil.service.errors`. All methods are blocking (HDF5, torch, OpenSlide) and thread-safe:
FastAPI runs them in its threadpool.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acmil.checkpoint import LoadedModel
from acmil.ensemble import Ensemble
from acmil.features import FeatureFileError, FeatureMeta, SlideFeatures, provenance, read_features, read_meta
from acmil.geometry import level0_extent, plausible_mpp
from acmil.inference import BagPrediction
from acmil.recipe import contradictions, recipe_from_meta

from .caches import LockedLRU
from .errors import BadInput, NotFound, ServiceError, Unavailable
from .registry import SlideEntry, SlideRegistry
from .slides import SlideImages
from .uploads import UploadSlots

FINGERPRINT_BYTES = 64 * 1024


def fingerprint(path: Path) -> str:
    """A key that changes when the file's content does: size, mtime and its first and last 64 KiB.

    Cheap for any size (a full hash of a 500 MB feature file would cost more than the prediction);
    HDF5 keeps its superblock and object headers at the ends, which any rewrite changes.
    """
    stat = path.stat()
    digest = hashlib.blake2b(f"{stat.st_size}:{stat.st_mtime_ns}".encode(), digest_size=16)
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        if stat.st_size > FINGERPRINT_BYTES:
            handle.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


@dataclass(kw_only=True)
class SlidePrediction:
    """A slide's prediction with the geometry needed to draw its attention.

    Attributes:
        coords: (N, 2) int64 level-0 (x, y) of each tile.
        prediction: probabilities (C,), attention (M, N); of an ensemble: the mean probabilities and the
            members' mean attention (1, N).
        patch_size_level0: tile side in level-0 px; None when unknown (one tile, no ``patch_size_level0``).
        level0_size: (width, height) of the slide (from the image, the file's attributes or the tiles);
            None when none of them tells (no image, no attributes, tile size unknown).
        members: each ensemble member's own prediction (one: ``prediction`` itself).
    """

    slide_id: str
    key: str
    coords: np.ndarray
    prediction: BagPrediction
    patch_size_level0: int | None
    level0_size: tuple[int, int] | None
    elapsed_ms: float
    members: list[BagPrediction] = field(default_factory=list)

    def geometry(self) -> tuple[int, tuple[int, int]]:
        """(patch_size_level0, level0_size) to draw the attention on the slide; 422 when the tile size is
        unknown: a guessed size would draw the tile in the wrong place. The prediction needs neither."""
        if self.patch_size_level0 is None or self.level0_size is None:
            raise BadInput(
                f"slide {self.slide_id!r}: patch size unknown (one tile and no patch_size_level0 attribute in its "
                "feature file), so its attention cannot be placed on the slide; its prediction is still served"
            )
        return self.patch_size_level0, self.level0_size

    def scores(self, branch: int | None, model: int | None = None) -> np.ndarray:
        """(N,) attention of the model (``model`` None: of an ensemble, the mean of its members'), or of
        ensemble member ``model``; the mean over its branches (``branch`` None) or one branch."""
        members = self.members or [self.prediction]
        if model is not None:
            if not 0 <= model < len(members):
                raise BadInput(f"model must be in 0..{len(members) - 1} (or 'mean'), got {model}")
            attention = members[model].attention
        elif len(members) > 1:
            if branch is not None:  # branch m of one member is not branch m of another: no mean of those
                raise BadInput(f"branch={branch} needs model=k (0..{len(members) - 1}): this is an ensemble")
            return self.prediction.mean_attention
        else:
            attention = self.prediction.attention
        if branch is None:
            return attention.mean(axis=0)
        if not 0 <= branch < attention.shape[0]:
            raise BadInput(f"branch must be in 0..{attention.shape[0] - 1} (or 'mean'), got {branch}")
        return attention[branch]


class Engine:
    """Model + registry + caches. One per app, created in the lifespan."""

    def __init__(self, ensemble: Ensemble | LoadedModel, registry: SlideRegistry, settings: Any) -> None:
        self.ensemble = ensemble if isinstance(ensemble, Ensemble) else Ensemble([ensemble])
        self.registry = registry
        self.settings = settings
        self.images = SlideImages(settings)
        self._predictions = LockedLRU(settings.prediction_cache_size)
        self._overlays = LockedLRU(settings.overlay_cache_size)
        self._meta = LockedLRU(4096)
        self._heatmaps = LockedLRU(16)
        self.upload_slots = UploadSlots(settings.max_concurrent_uploads, settings.upload_slot_wait_s)
        # One forward at a time: on a few cores, parallel forwards only thrash, and tiles stay responsive.
        self._model_slots = threading.BoundedSemaphore(max(1, settings.max_concurrent_predictions))
        self._key_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def loaded(self) -> LoadedModel:
        """The first model: its card's recipe, feature width and class names are every member's."""
        return self.ensemble.members[0]

    # --- slides -------------------------------------------------------------------------------
    def entry(self, slide_id: str) -> SlideEntry:
        """The registered slide, or 404. Ids are only ever dictionary keys, never paths."""
        entry = self.registry.get(slide_id)
        if entry is None:
            if self.registry.problem:
                raise Unavailable(f"slide {slide_id!r}: {self.registry.problem}", retry_after_s=5)
            raise NotFound(f"unknown slide id {slide_id!r}")
        return entry

    def _header(self, entry: SlideEntry) -> FeatureMeta:
        """The feature file's header (no features read), cached by path, size and mtime."""
        stat = entry.features_path.stat()  # a listing must not read every file: key on size + mtime
        key = (str(entry.features_path), stat.st_size, stat.st_mtime_ns)
        meta = self._meta.get(key)
        if meta is None:
            meta = read_meta(entry.features_path)
            self._meta.put(key, meta)
        return meta

    def recipe_conflict(self, meta: FeatureMeta) -> str | None:
        """How a feature file's provenance contradicts the model's recipe (other encoder, weights, µm/px, tile
        size ...), naming both values; None when they agree or one side does not record a field."""
        found = contradictions(self.loaded.card.encoder or {}, recipe_from_meta(meta)) if meta.attrs else []
        return f"made with another recipe than the model's ({'; '.join(found)})" if found else None

    def summary(self, entry: SlideEntry) -> tuple[int | None, str | None]:
        """(n_tiles, error) of a slide's feature file, reading only its header (cached by content)."""
        try:
            meta = self._header(entry)
            if meta.dim != self.loaded.card.in_dim:
                return meta.n_patches, f"feature dim {meta.dim} does not match the model's {self.loaded.card.in_dim}"
            return meta.n_patches, self.recipe_conflict(meta)
        except (FeatureFileError, OSError) as err:
            return None, _public(err, entry)

    def metadata(self, entry: SlideEntry) -> dict[str, Any]:
        result = self.predict(entry)[0]  # geometry and tile count come with the (cached) prediction
        try:
            meta = read_meta(entry.features_path)
        except FeatureFileError as err:  # replaced by a broken file since the prediction
            raise BadInput(_public(err, entry)) from err
        info = self.images.info(entry)
        mpp = info.get("mpp") or plausible_mpp(meta.attrs.get("mpp_level0"))
        return {
            "slide_id": entry.slide_id,
            "has_image": info["has_image"],
            "width": result.level0_size[0] if result.level0_size else None,
            "height": result.level0_size[1] if result.level0_size else None,
            "mpp": mpp,
            "n_tiles": meta.n_patches,
            "feature_dim": meta.dim,
            "patch_size_level0": result.patch_size_level0,
            "vendor": info.get("vendor"),
            "level_count": info.get("level_count"),
            "objective_power": info.get("objective_power"),
            "provenance": provenance(meta.attrs),
            "image_error": info.get("error"),
            "deepzoom_tile_size": self.settings.tile_size,
            "deepzoom_overlap": self.settings.tile_overlap,
        }

    # --- predictions --------------------------------------------------------------------------
    def predict(self, entry: SlideEntry) -> tuple[SlidePrediction, bool]:
        """The slide's prediction and whether it came from the cache (keyed by the file's content)."""
        try:
            key = fingerprint(entry.features_path)
        except OSError as err:  # removed or unreadable since the folder was listed
            raise NotFound(_public(err, entry)) from err
        cached = self._predictions.get(key)
        if cached is not None:
            return cached, True
        with self._lock_for(key):  # one computation per file even under concurrent first views
            cached = self._predictions.get(key)
            if cached is not None:
                return cached, True
            start = time.perf_counter()
            try:
                conflict = self.recipe_conflict(self._header(entry))
                feats = read_features(entry.features_path, slide_id=entry.slide_id)
            except FeatureFileError as err:
                raise BadInput(_public(err, entry)) from err
            if conflict:
                raise BadInput(f"slide {entry.slide_id!r}: its features were {conflict}")
            result = self._run(feats, key, start, self.images.dimensions(entry))
            self._predictions.put(key, result)
        return result, False

    def warm(self, stop: threading.Event) -> int:
        """Predict every registered slide into the cache (up to its size), until ``stop`` is set.

        Run in a background thread at start-up (``acmil serve --precompute``) so that a slide's first
        view is served from the cache. Bad files are skipped: they fail on their own request.
        Returns the number of slides predicted.
        """
        done = 0
        for entry in self.registry.list()[: self.settings.prediction_cache_size]:
            if stop.is_set():
                break
            try:
                self.predict(entry)
                done += 1
            except (ServiceError, FeatureFileError, OSError, ValueError):
                continue
        return done

    def predict_features(self, feats: SlideFeatures) -> SlidePrediction:
        """Prediction for features not on disk (uploads); not cached."""
        header = FeatureMeta(
            Path(feats.slide_id),
            feats.slide_id,
            len(feats.features),
            int(feats.features.shape[1]),
            feats.attrs,
            feats.coord_attrs,
            "format1",
        )
        conflict = self.recipe_conflict(header)
        if conflict:
            raise BadInput(f"uploaded features of {feats.slide_id!r} were {conflict}")
        return self._run(feats, "upload", time.perf_counter(), None)

    def _run(self, feats: SlideFeatures, key: str, start: float, image_size: tuple[int, int] | None) -> SlidePrediction:
        in_dim = self.loaded.card.in_dim
        if feats.dim != in_dim:
            raise BadInput(f"{feats.slide_id}: feature dim {feats.dim} does not match the model's in_dim {in_dim}")
        patch = feats.patch_size_level0  # None: one tile without the attribute (predicted, not drawn)
        with self._model_slots:
            both = self.ensemble.predict(feats.features)
        prediction = both.members[0]
        if len(both.members) > 1:
            prediction = BagPrediction(both.probabilities, both.mean_attention[None])
        size = image_size or _extent(feats, patch)
        return SlidePrediction(
            slide_id=feats.slide_id,
            key=key,
            coords=feats.coords,
            prediction=prediction,
            patch_size_level0=None if patch is None else int(patch),
            level0_size=size,
            elapsed_ms=(time.perf_counter() - start) * 1000.0,
            members=both.members,
        )

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._key_locks) > 4096:  # forget idle locks; a held one is recreated harmlessly
                self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
            return self._key_locks.setdefault(key, threading.Lock())

    # --- attention rendering ------------------------------------------------------------------
    def heatmap_png(self, entry: SlideEntry, branch: int | None, model: int | None = None, **options: Any) -> bytes:
        """The heatmap over the slide thumbnail (or a blank canvas), as PNG bytes (``model``: see
        :meth:`SlidePrediction.scores`)."""
        from acmil.heatmap import render_heatmap

        result, _ = self.predict(entry)
        patch, level0_size = result.geometry()
        scores = result.scores(branch, model)
        key = (result.key, branch, model, tuple(sorted(options.items())))
        png = self._heatmaps.get(key)
        if png is None:
            try:
                background = self.images.thumbnail(entry, options["max_size"])
            except BadInput:  # an unreadable image still gets its heatmap, on a blank canvas
                background = None
            try:
                image = render_heatmap(
                    result.coords,
                    scores,
                    patch,
                    level0_size,
                    background=background,
                    **options,
                )
            except ValueError as err:
                raise BadInput(str(err)) from err
            png = _png(image)
            self._heatmaps.put(key, png)
        return png

    def overlay(
        self,
        entry: SlideEntry,
        branch: int | None,
        cmap: str,
        normalisation: str,
        smoothing: float,
        model: int | None = None,
    ):
        """A :class:`~acmil.heatmap.DeepZoomOverlay` aligned with the slide's DeepZoom tiles (cached)."""
        from acmil.heatmap import DeepZoomOverlay, overlay_max_size, render_overlay

        result, _ = self.predict(entry)
        scores = result.scores(branch, model)
        key = (result.key, branch, model, cmap, normalisation, round(float(smoothing), 3))
        overlay = self._overlays.get(key)
        if overlay is None:
            patch, level0_size = result.geometry()
            size = overlay_max_size(level0_size, patch)
            try:
                image = render_overlay(
                    result.coords,
                    scores,
                    patch,
                    level0_size,
                    max_size=size,
                    cmap=cmap,
                    alpha=1.0,
                    smoothing_sigma=smoothing,
                    normalisation=normalisation,
                )
            except ValueError as err:
                raise BadInput(str(err)) from err
            overlay = DeepZoomOverlay(image, level0_size, self.settings.tile_size, self.settings.tile_overlap)
            self._overlays.put(key, overlay)
        return overlay

    def overlay_tile(self, overlay: Any, level: int, col: int, row: int) -> bytes:
        try:
            return _png(overlay.get_tile(level, col, row))
        except ValueError as err:
            raise NotFound(str(err)) from err


def _extent(feats: SlideFeatures, patch: int | None) -> tuple[int, int] | None:
    """The slide's level-0 size from the file's attributes or its tiles; None for one tile of unknown size."""
    attrs = feats.coord_attrs
    if patch is None and not (attrs.get("level0_width") and attrs.get("level0_height")):
        return None
    return level0_extent(attrs, feats.coords, patch or 0)  # the tile size is used only without the attributes


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # speed over a few % of size
    return buffer.getvalue()


def _public(err: Exception, entry: SlideEntry) -> str:
    """An error message naming the feature file by name only (no server paths to clients)."""
    text = str(err).replace(str(entry.features_path), entry.features_path.name)
    return f"slide {entry.slide_id!r}: {text}"
