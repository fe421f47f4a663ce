"""Starting real ``acmil serve`` / ``acmil worker`` / ``redis-server`` processes for the job tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "test-key-jobs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "ACMIL_API_KEY": KEY, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Proc:
    """A child process with its log in a file; killed (group) on stop."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log_path = log
        self.log = open(log, "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    checkpoint: Path, features: Path, jobs_dir: Path, log: Path, *extra: str, port: int | None = None
) -> tuple[Proc, str]:
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "acmil",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--features",
        str(features),
        "--jobs-dir",
        str(jobs_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = Proc(argv, log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError(f"server exited: {proc.text()[-3000:]}")
        try:
            if httpx.get(base + "/api/v1/health", headers={"X-API-Key": KEY}, timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.stop()
    raise RuntimeError(f"server did not start: {proc.text()[-3000:]}")


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base + "/api/v1", headers={"X-API-Key": KEY}, timeout=60)


def upload(c: httpx.Client, slide: Path) -> httpx.Response:
    with slide.open("rb") as f:
        return c.post("/slides", files={"file": (slide.name, f, "image/tiff")})


def wait_job(
    c: httpx.Client, job_id: str, until=("done", "failed", "cancelled"), timeout: float = 300, seen: list | None = None
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/jobs/{job_id}").json()
        if seen is not None and (not seen or seen[-1] != job["stage"]):
            seen.append(job["stage"])
        if job["state"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {until} in {timeout} s: {job}")
