"""Starting real ``acmil serve`` / ``acmil worker`` / ``redis-server`` processes, and waiting until they answer.

``wait_until_healthy`` is the one health-poll loop of the real-server tests (service, jobs, browser, wheel);
``start_server`` and the rest are the job tests' ``acmil serve --jobs-dir`` and its client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

KEY = "test-key-jobs"


def free_port() -> int:
    """A free loopback port (bound and released; the server binds it next)."""
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
    try:
        wait_until_healthy(proc.p, base, log, 90, key=KEY)
    except BaseException:  # pytest.fail raises an outcome, not an Exception: stop the server either way
        proc.stop()
        raise
    return proc, base


def wait_until_healthy(
    process: subprocess.Popen, base: str, log: Path, timeout_s: float = 60, key: str | None = None
) -> None:
    """Poll ``{base}/api/v1/health`` of a real ``acmil serve`` until it answers 200; fail with its log if it exits
    first or does not answer within ``timeout_s``."""
    headers = {"X-API-Key": key} if key else {}
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"acmil serve exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base}/api/v1/health", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"acmil serve did not answer within {timeout_s:g} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


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
