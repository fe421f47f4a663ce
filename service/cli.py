"""``acmil serve``: run the service with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STARTUP_FAILED = 3  # uvicorn's own exit code for a failed start-up, kept for ours


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acmil serve",
        allow_abbrev=False,
        description="Serve slide predictions, attention heatmaps and the slide viewer (REST API under /api/v1).",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.ckpt / .pt)")
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
        action="append",
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
    from .jobs_cli import add_serve_arguments

    add_serve_arguments(parser)
    return parser


def settings_from_args(args: argparse.Namespace):  # noqa: ANN201 - Settings, imported lazily
    from .config import Settings

    if not args.checkpoint.is_file():
        raise FileNotFoundError(f"{args.checkpoint}: checkpoint not found")
    if not args.features.is_dir():
        raise FileNotFoundError(f"{args.features}: features folder not found")
    if args.slides is not None and not args.slides.is_dir():
        raise FileNotFoundError(f"{args.slides}: slides folder not found")
    # Only what the command line gives overrides the settings; the rest may come from ACMIL_* variables
    # (e.g. ACMIL_API_KEY in a container), so an unset flag must not blank them.
    given: dict = {"checkpoint": args.checkpoint, "features_dir": args.features}
    if args.slides is not None:
        given["slides_dir"] = args.slides
    if args.annotations is not None:
        if not args.annotations.is_dir():
            raise FileNotFoundError(f"{args.annotations}: annotations folder not found")
        given["annotations_dir"] = args.annotations
    if args.api_key_env:
        given["api_key"] = os.environ.get(args.api_key_env)
        if not given["api_key"]:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    if args.cors_origin:
        given["cors_origins"] = list(args.cors_origin)
    if args.max_upload_mb is not None:
        given["max_upload_bytes"] = int(args.max_upload_mb * 1024 * 1024)
    if args.precompute:
        given["precompute"] = True
    if args.device is not None:
        given["device"] = args.device
    if args.viewer_assets is not None:
        given["viewer_assets_dir"] = args.viewer_assets
    from .jobs_cli import serve_overrides

    given.update(serve_overrides(args))
    return Settings(**given)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"acmil serve: error: --port {args.port}: not a TCP port (0..65535)", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    import uvicorn

    from .main import create_app, load_checkpoint
    from .routers.viewer import prepare_assets

    try:  # before uvicorn, so a bad checkpoint or device is one line, not a lifespan traceback
        loaded = load_checkpoint(settings)
    except Exception as err:  # noqa: BLE001 - whatever the checkpoint or torch raise, say it in one line
        text = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, (ValueError, OSError, RuntimeError)):
            text = f"{type(err).__name__}: {text}"
        print(f"acmil serve: cannot start: {text}", file=sys.stderr)
        return STARTUP_FAILED

    prepare_assets(settings.viewer_assets_dir, lambda line: print(f"acmil serve: {line}", flush=True))
    if settings.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"acmil serve: warning: listening on {args.host} without an API key; anyone who can reach this "
            "port can read predictions and slides (use --api-key-env NAME)"
        )
    if args.workers > 1:
        del loaded  # checked above; each worker loads its own copy
        # Workers import the app by name, so pass the settings through the environment.
        os.environ.update({f"ACMIL_{k.upper()}": _env(v) for k, v in settings.model_dump().items() if v is not None})
        uvicorn.run(
            "acmil.service.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
        )
    else:
        uvicorn.run(create_app(settings, loaded), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _env(value: object) -> str:
    import json

    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
