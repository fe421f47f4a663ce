"""End to end as a pip user gets it: a built wheel in a fresh venv serves the viewer with no npm step.

The wheel is built from a copy of the tracked files (as a fresh clone has them), installed with ``--no-deps``
into a new venv that sees this environment's packages through a ``.pth`` file, and its ``acmil serve`` is
started outside the checkout with an empty cache and a local registry serving the genuine pinned tarball.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from acmil import viewer_assets as assets
from tests.helpers.server import wait_until_healthy
from tests.helpers.viewer_assets import genuine_tarball, local_registry, tarball_path

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _fresh_clone(target: Path) -> Path:
    """The tracked and new (not ignored) files of the checkout, copied (symlinks kept as links)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source, dest = REPO / name, target / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), dest)
        else:
            shutil.copy2(source, dest)
    return target


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.fail(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    clone = _fresh_clone(root / "clone")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(clone)])
    (built,) = (root / "dist").glob("acmil-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # This environment's dependencies (torch, fastapi, ...), after the venv's own site-packages.
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz-test-deps.pth").write_text("\n".join(deps) + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ]
    )
    return venv


def test_the_wheel_carries_the_pin_and_no_openseadragon_copy(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "acmil/package-lock.json" in names and "acmil/viewer_assets.py" in names
    assert "acmil/service/static/index.html" in names
    assert not [n for n in names if "openseadragon.min.js" in n or "node_modules" in n]
    lock = zipfile.ZipFile(wheel).read("acmil/package-lock.json")
    assert lock == (REPO / "package-lock.json").read_bytes()


def test_wheel_serves_the_viewer_after_fetching_the_pinned_tarball(wheel_venv, service_data, tmp_path):
    python = wheel_venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import acmil.viewer_assets as a; print(a.__file__, a.NODE_MODULES)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.split()
    assert where[0].startswith(str(wheel_venv)) and not Path(where[1]).exists()  # the wheel's code, no node_modules

    data = genuine_tarball()
    with socket_port() as port, local_registry({tarball_path(): data}) as (registry, requested):
        env = {**os.environ, "ACMIL_CACHE_DIR": str(tmp_path / "cache"), "ACMIL_NPM_REGISTRY": registry}
        log = tmp_path / "serve.log"
        command = [
            str(wheel_venv / "bin" / "acmil"),
            "serve",
            "--checkpoint",
            str(service_data["checkpoint"]),
            "--features",
            str(service_data["features"]),
            "--port",
            str(port),
            "--log-level",
            "info",
        ]
        with log.open("w") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_healthy(server, base, log, 90)  # the wheel's venv imports everything afresh
            page = httpx.get(f"{base}/", timeout=30)
            script = httpx.get(f"{base}/vendor/openseadragon/openseadragon.min.js", timeout=30)
            icon = httpx.get(f"{base}/vendor/openseadragon/images/zoomin_rest.png", timeout=30)
        finally:
            server.terminate()
            server.wait(timeout=20)
    said = log.read_text()
    assert page.status_code == 200 and "ACMIL slide viewer" in page.text, said
    assert (
        script.status_code == 200
        and script.content
        == (
            tmp_path / "cache" / "viewer" / f"openseadragon-{assets.pin().version}" / "build" / "openseadragon.min.js"
        ).read_bytes()
    )
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert requested == [tarball_path()]  # fetched once, at start-up
    assert f"fetching OpenSeadragon {assets.pin().version}" in said and "Traceback" not in said


class socket_port:  # noqa: N801 - used as a context manager
    """A free loopback port."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None
