"""Service settings: from the environment (``ACMIL_*``) or given by ``acmil serve``'s flags.

Read once through the cached :func:`get_settings` dependency; tests build a :class:`Settings` directly
and pass it to ``create_app`` (or override ``get_settings``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# node_modules lies at the repository root, next to service/ (an editable install or a checkout).
DEFAULT_ASSETS = Path(__file__).resolve().parents[1] / "node_modules" / "openseadragon" / "build" / "openseadragon"


class Settings(BaseSettings):
    """Everything the service reads at start-up.

    Environment variables are the field names prefixed with ``ACMIL_`` (e.g. ``ACMIL_CHECKPOINT``,
    ``ACMIL_FEATURES_DIR``, ``ACMIL_API_KEY``; lists as JSON: ``ACMIL_CORS_ORIGINS='["http://x"]'``).
    """

    model_config = SettingsConfigDict(env_prefix="ACMIL_", extra="ignore")

    checkpoint: Annotated[list[Path], NoDecode] = Field(
        description="model checkpoint(s) (.ckpt / .pt, run or cv folders); several form an ensemble "
        "(acmil.ensemble): their probabilities are averaged. One path, or a JSON list in ACMIL_CHECKPOINT",
        min_length=1,
    )
    features_dir: Path = Field(description="folder of <slide_id>.h5 feature files")
    slides_dir: Path | None = Field(None, description="folder of slide images, matched to feature files by stem")
    annotations_dir: Path | None = Field(None, description="folder of <slide_id>.geojson annotations (QuPath)")
    api_key: SecretStr | None = Field(None, description="when set, every request needs it (header or cookie)")
    api_key_header: str = "X-API-Key"
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins; empty = CORS off")
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="POST /predict upload limit (413 above)")
    viewer_assets_dir: Path = Field(
        DEFAULT_ASSETS,
        description="OpenSeadragon's build folder (default: node_modules, else fetched once into the user cache)",
    )
    prediction_cache_size: int = Field(64, ge=0, description="slides whose prediction is kept in memory")
    overlay_cache_size: int = Field(8, ge=1, description="rendered attention overlays kept (each up to 64 MB)")
    max_concurrent_predictions: int = Field(1, ge=1, description="model forwards run at the same time")
    max_upload_tiles: int = Field(1_000_000, ge=1, description="POST /predict: most tiles in an uploaded file")
    max_upload_feature_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="POST /predict: most bytes an upload's features decode to (N x D x 4)"
    )
    max_concurrent_uploads: int = Field(2, ge=1, description="POST /predict: uploads decoded at the same time")
    upload_slot_wait_s: float = Field(5.0, ge=0, description="how long an upload waits for a decoding slot (then 503)")
    body_idle_timeout_s: float = Field(
        30.0, gt=0, description="a request body must send its next bytes within this (408 otherwise)"
    )
    body_min_rate: int = Field(
        16 * 1024, ge=0, description="bytes/s a request body must average after its first body_idle_timeout_s"
    )
    slide_cache_size: int = Field(16, ge=1, description="open slide handles kept")
    tile_size: int = Field(254, ge=16, le=2048, description="DeepZoom tile size (slide and overlay)")
    tile_overlap: int = Field(1, ge=0, le=16, description="DeepZoom tile overlap")
    tile_quality: int = Field(80, ge=1, le=100, description="JPEG quality of slide tiles")
    device: str = Field("cpu", description='torch device for the model, e.g. "cpu", "cuda", "cuda:1"')
    precompute: bool = Field(False, description="predict all slides into the cache in the background at start-up")
    default_top_k: int = Field(12, ge=1, le=1000, description="top-attended tiles in a prediction")
    # Slide jobs (service/jobs_app.py): new slides in, predictions out.
    jobs_dir: Path | None = Field(None, description="slide jobs' folder (queue, uploads, cache); <features_dir>/.jobs")
    queue_url: str | None = Field(None, description="redis://HOST:PORT/DB for acmil worker processes; none = SQLite")
    embedded_worker: bool = Field(True, description="run slide jobs in this process (a huey consumer thread)")
    import_dir: Path | None = Field(None, description='folder that POST /slides {"path": ...} may read from')
    watch_dir: Path | None = Field(None, description="queue every new slide that appears in this folder")
    encoder_weights: str | None = Field(None, description="the recipe's encoder weights file, when it used one")
    max_slide_bytes: int = Field(20 * 1024**3, ge=1, description="largest slide upload (max_upload_bytes caps it too)")
    upload_quota_bytes: int = Field(200 * 1024**3, ge=1, description="total size of kept uploads")
    max_queued_jobs_per_client: int = Field(16, ge=1, description="queued or running jobs per client address")

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """One path (``checkpoint=p``, ``ACMIL_CHECKPOINT=/a.ckpt``) is a list of one; a JSON list is read."""
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        return [value] if isinstance(value, (str, Path)) else value


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once."""
    return Settings()  # type: ignore[call-arg]  # required fields come from the environment
