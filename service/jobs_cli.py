"""Command-line parts of slide jobs: ``acmil serve``'s job options and ``acmil worker --queue redis://...``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acmil.command import CommandParser, command_parser, config_from


@dataclass(kw_only=True)
class JobOptions:
    """``acmil serve``'s slide-job options (unset: ``ACMIL_*`` or the defaults of :class:`~.config.Settings`)."""

    jobs_dir: Path | None = None
    queue: str | None = None
    embedded_worker: bool | None = None
    import_dir: Path | None = None
    watch: Path | None = None
    encoder_weights: str | None = None
    max_slide_gb: float | None = None
    upload_quota_gb: float | None = None
    max_jobs_per_client: int | None = None


@dataclass(kw_only=True)
class WorkerConfig:
    """``acmil worker``'s options."""

    queue: str
    device: str | None = None


def flat_list(value: Any) -> list:
    """A repeatable flag's values as one flat list (None: empty)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [value]
    return [v for item in value for v in flat_list(item)]


def add_serve_arguments(parser: CommandParser) -> None:
    group = parser.add_argument_group("slide jobs (POST /api/v1/slides)")
    group.add_argument("--jobs-dir", type=Path, default=None, help="queue, uploads and cache (default FEATURES/.jobs)")
    group.add_argument(
        "--queue",
        default=None,
        metavar="URL",
        help="redis://HOST:PORT/DB: jobs run in acmil worker processes (default: SQLite, in here)",
    )
    group.add_argument(
        "--no-embedded-worker",
        dest="embedded_worker",
        action="store_false",
        default=None,
        help="do not run jobs in this process (with --queue, leave them to acmil worker)",
    )
    group.add_argument("--import-dir", type=Path, default=None, help='folder POST /slides {"path": ...} reads from')
    group.add_argument(
        "--watch",
        type=Path,
        default=None,
        metavar="DIR",
        help="queue every new slide in DIR once it has stopped growing",
    )
    group.add_argument("--encoder-weights", default=None, help="the recipe's encoder weights file, if it used one")
    group.add_argument("--max-slide-gb", type=float, default=None, help="largest slide upload (20)")
    group.add_argument("--upload-quota-gb", type=float, default=None, help="total size of kept uploads (200)")
    group.add_argument("--max-jobs-per-client", type=int, default=None, help="queued/running jobs per client (16)")


def serve_overrides(args: Any) -> dict:
    """The Settings fields the job options give (unset ones stay with ACMIL_* or the defaults)."""
    for name in ("import_dir", "watch"):
        value = getattr(args, name, None)
        if value is not None and not value.is_dir():
            raise FileNotFoundError(f"{value}: --{name.replace('_', '-')} folder not found")
    given = {
        "jobs_dir": args.jobs_dir,
        "queue_url": args.queue,
        "embedded_worker": args.embedded_worker,
        "import_dir": args.import_dir,
        "watch_dir": args.watch,
        "encoder_weights": args.encoder_weights,
        "max_slide_bytes": None if args.max_slide_gb is None else int(args.max_slide_gb * 1024**3),
        "upload_quota_bytes": None if args.upload_quota_gb is None else int(args.upload_quota_gb * 1024**3),
        "max_queued_jobs_per_client": args.max_jobs_per_client,
    }
    return {k: v for k, v in given.items() if v is not None}


def build_worker_parser() -> CommandParser:
    parser = command_parser(
        "acmil worker",
        "acmil worker --queue redis://HOST:PORT/DB: run slide jobs (one model and encoder load per process).",
    )
    parser.add_argument("--queue", required=True, metavar="URL", help="the queue acmil serve --queue was given")
    parser.add_argument("--device", default=None, help="torch device for this worker (default: the server's)")
    return parser


def worker_main(argv: list[str]) -> int:
    """``acmil worker --queue redis://HOST:PORT/DB``: run slide jobs (one model and encoder load per process)."""
    parser = build_worker_parser()
    config = config_from(parser.parse_args(argv), WorkerConfig)
    if not config.queue.startswith(("redis://", "rediss://", "unix://")):
        parser.error(f"--queue {config.queue!r}: give redis://HOST:PORT/DB (the embedded SQLite queue runs in serve)")
    return run_worker(config)


def run_worker(config: WorkerConfig) -> int:
    """Consume slide jobs from ``config.queue`` until stopped; returns the exit status."""
    from huey.consumer import Consumer

    from . import jobs_queue

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if config.device:
        jobs_queue.DEVICE_OVERRIDE = config.device
    huey = jobs_queue.make_huey(config.queue, Path("."))
    print(f"acmil worker {jobs_queue.worker_name()}: waiting for slide jobs on {config.queue}", flush=True)
    Consumer(huey, workers=1, worker_type="thread", periodic=False).run()
    return 0
