"""``acmil serve``: run the service with uvicorn."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acmil.command import CommandParser, command_parser, config_from

from .jobs_cli import JobOptions, add_serve_arguments, flat_list, serve_overrides

STARTUP_FAILED = 3  # uvicorn's own exit code for a failed start-up, kept for ours


@dataclass(kw_only=True)
class ServeConfig(JobOptions):
    """``acmil serve``'s options (the flag names with ``_``; also the keys of ``--config FILE.yaml``)."""

    checkpoint: list[Path]
    features: Path
    slides: Path | None = None
    annotations: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str | None = None
    cors_origin: list[str] | None = None
    max_upload_mb: float | None = None
    device: str | None = None
    precompute: bool = False
    viewer_assets: Path | None = None
    workers: int = 1
    log_level: str = "info"


class StartupFailed(RuntimeError):
    """The model could not be loaded (bad checkpoint, mismatched ensemble, bad device): one line."""


def build_parser() -> CommandParser:
    parser = command_parser(
        "acmil serve",
        "Serve slide predictions, attention heatmaps and the slide viewer (REST API under /api/v1).",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        action="extend",
        metavar="CKPT",
        help="model checkpoint (.ckpt / .pt), a run directory or a cv directory (every fold's best.ckpt); "
        "repeat it for an ensemble of one recipe: probabilities averaged, attention per model and averaged",
    )
    parser.add_argument("--features", required=True, type=Path, help="folder of <slide_id>.h5 feature files")
    parser.add_argument(
        "--slides",
        type=Path,
        default=None,
        help="folder of slide images, matched to feature files by file stem (optional)",
    )
    parser.add_argument(
        "--annotations",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of <slide_id>.geojson QuPath annotations, served as a layer (optional)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=None,
        help="require the API key held in this environment variable on every request",
    )
    parser.add_argument(
        "--cors-origin",
        nargs="+",
        action="extend",
        default=None,
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN (repeatable; CORS is off by default)",
    )
    parser.add_argument("--max-upload-mb", type=float, default=None, help="POST /predict upload limit (512)")
    parser.add_argument("--device", default=None, help='torch device for the model ("cpu" default, "cuda", "cuda:1")')
    parser.add_argument(
        "--precompute",
        action="store_true",
        help="predict every slide in the background at start-up, so first views are instant",
    )
    parser.add_argument(
        "--viewer-assets",
        type=Path,
        default=None,
        metavar="DIR",
        help="OpenSeadragon's build/openseadragon folder (default: node_modules of a checkout, "
        "else fetched once from the npm registry into the user cache, as package-lock.json pins)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads the model)")
    parser.add_argument("--log-level", default="info")
    add_serve_arguments(parser)
    return parser


def serve_config(namespace: Any) -> ServeConfig:
    """The parsed options as a :class:`ServeConfig` (a repeated flag gives one list, as a YAML list does)."""
    values = namespace.as_dict() if hasattr(namespace, "as_dict") else vars(namespace)
    return config_from(
        namespace,
        ServeConfig,
        checkpoint=[Path(p) for p in flat_list(values.get("checkpoint"))],
        cors_origin=flat_list(values.get("cors_origin")) or None,
    )


def settings_from_args(args: Any):  # noqa: ANN201 - Settings, imported lazily
    """Settings from parsed options (a namespace of :func:`build_parser` or a :class:`ServeConfig`)."""
    from .config import Settings

    config = args if isinstance(args, ServeConfig) else serve_config(args)
    for checkpoint in config.checkpoint:
        if not checkpoint.exists():
            raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    if not config.features.is_dir():
        raise FileNotFoundError(f"{config.features}: features folder not found")
    if config.slides is not None and not config.slides.is_dir():
        raise FileNotFoundError(f"{config.slides}: slides folder not found")
    # Only what the command line gives overrides the settings; the rest may come from ACMIL_* variables
    # (e.g. ACMIL_API_KEY in a container), so an unset flag must not blank them.
    given: dict = {"checkpoint": list(config.checkpoint), "features_dir": config.features}
    if config.slides is not None:
        given["slides_dir"] = config.slides
    if config.annotations is not None:
        if not config.annotations.is_dir():
            raise FileNotFoundError(f"{config.annotations}: annotations folder not found")
        given["annotations_dir"] = config.annotations
    if config.api_key_env:
        given["api_key"] = os.environ.get(config.api_key_env)
        if not given["api_key"]:
            raise ValueError(f"--api-key-env {config.api_key_env}: that environment variable is empty or unset")
    if config.cors_origin:
        given["cors_origins"] = list(config.cors_origin)
    if config.max_upload_mb is not None:
        given["max_upload_bytes"] = int(config.max_upload_mb * 1024 * 1024)
    if config.precompute:
        given["precompute"] = True
    if config.device is not None:
        given["device"] = config.device
    if config.viewer_assets is not None:
        given["viewer_assets_dir"] = config.viewer_assets
    given.update(serve_overrides(config))
    return Settings(**given)


def main(argv: list[str]) -> int:
    config = serve_config(build_parser().parse_args(argv))
    if not 0 <= config.port <= 65535:
        print(f"acmil serve: error: --port {config.port}: not a TCP port (0..65535)", file=sys.stderr)
        return 2
    try:
        return run_serve(config)
    except StartupFailed as err:
        print(f"acmil serve: cannot start: {err}", file=sys.stderr)
        return STARTUP_FAILED


def run_serve(config: ServeConfig) -> int:
    """Load the model (or ensemble) and serve until stopped; returns the exit status.

    Raises:
        FileNotFoundError / ValueError: a missing input or bad option (before anything loads).
        StartupFailed: the checkpoints cannot be loaded or averaged, or the device is unusable (one line).
    """
    settings = settings_from_args(config)
    import uvicorn

    from .main import create_app, load_checkpoint
    from .routers.viewer import prepare_assets

    try:  # before uvicorn, so a bad checkpoint or device is one line, not a lifespan traceback
        loaded = load_checkpoint(settings)
    except Exception as err:  # noqa: BLE001 - whatever the checkpoint or torch raise, say it in one line
        text = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, (ValueError, OSError, RuntimeError)):
            text = f"{type(err).__name__}: {text}"
        raise StartupFailed(text) from err

    prepare_assets(settings.viewer_assets_dir, lambda line: print(f"acmil serve: {line}", flush=True))
    if settings.api_key is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"acmil serve: warning: listening on {config.host} without an API key; anyone who can reach this "
            "port can read predictions and slides (use --api-key-env NAME)"
        )
    if config.workers > 1:
        del loaded  # checked above; each worker loads its own copy
        # Workers import the app by name, so pass the settings through the environment.
        os.environ.update({f"ACMIL_{k.upper()}": _env(v) for k, v in settings.model_dump().items() if v is not None})
        uvicorn.run(
            "acmil.service.main:create_app",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            log_level=config.log_level,
        )
    else:
        uvicorn.run(create_app(settings, loaded), host=config.host, port=config.port, log_level=config.log_level)
    return 0


def _env(value: object) -> str:
    import json

    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)  # checkpoint paths: a JSON list of strings
    return str(value)
