"""The viewer's OpenSeadragon files without npm: fetched once from a registry, verified, unpacked safely.

A local HTTP server plays the npm registry (``ACMIL_NPM_REGISTRY``) and serves the genuine pinned tarball, a
tampered one or an unsafe one; the cache is a temporary folder (``ACMIL_CACHE_DIR``).
"""

from __future__ import annotations

import io
import socket
import tarfile
import time

import pytest
from fastapi.testclient import TestClient

from acmil import viewer_assets as assets
from tests.helpers.viewer_assets import genuine_tarball, local_registry, sri, tarball_path

MIN_JS = "package/build/openseadragon/openseadragon.min.js"


@pytest.fixture
def no_checkout_assets(tmp_path, monkeypatch):
    """As a wheel sees it: no node_modules, an empty private cache."""
    monkeypatch.setattr(assets, "NODE_MODULES", tmp_path / "no-node-modules")
    monkeypatch.setenv("ACMIL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "viewer"


def _member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.extractfile(name).read()


def _tarball(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, body in members:
            info.size = len(body) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(body) if info.isfile() else None)
    return out.getvalue()


def _file(name: str, body: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), body


def test_first_use_fetches_verifies_unpacks_then_reuses(no_checkout_assets, monkeypatch):
    data = genuine_tarball()
    with local_registry({tarball_path(): data}) as (url, requested):
        monkeypatch.setenv("ACMIL_NPM_REGISTRY", url)
        build = assets.ensure_assets()
        assert build == no_checkout_assets / f"openseadragon-{assets.pin().version}" / "build"
        assert (build / "openseadragon.min.js").read_bytes() == _member(data, MIN_JS)
        assert (build / "images" / "home_rest.png").is_file()
        assert not (build.parent / "package").exists()  # only the build folder is unpacked
        assert assets.ensure_assets() == build and assets.find_assets() == build
        assert requested == [tarball_path()]  # downloaded once


def test_a_tampered_tarball_is_refused_and_the_viewer_says_so(no_checkout_assets, monkeypatch, make_settings):
    genuine = genuine_tarball()
    tampered = _tarball([_file(MIN_JS, _member(genuine, MIN_JS) + b"\n;alert('injected')")])
    with local_registry({tarball_path(): tampered}) as (url, _):
        monkeypatch.setenv("ACMIL_NPM_REGISTRY", url)
        with pytest.raises(assets.IntegrityError, match="not the pinned openseadragon; refused"):
            assets.ensure_assets()
        assert not (no_checkout_assets / f"openseadragon-{assets.pin().version}").exists()
        assert [p.name for p in no_checkout_assets.iterdir()] == ["openseadragon.lock"]  # nothing unpacked

        from acmil.service.main import create_app

        with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
            page = client.get("/")
            vendor = client.get("/vendor/openseadragon/openseadragon.min.js")
    assert page.status_code == 503 and "refused" in page.text and "Traceback" not in page.text
    assert vendor.status_code == 503 and "refused" in vendor.text and "Traceback" not in vendor.text


@pytest.mark.parametrize(
    "evil",
    [
        _file("package/build/openseadragon/../../../../escaped.js"),
        _file("/tmp/acmil-absolute-escape.js"),
        (tarfile.TarInfo(MIN_JS), b""),  # made a symlink below
    ],
)
def test_unsafe_tarball_members_are_refused(evil, no_checkout_assets, monkeypatch, tmp_path):
    info, body = evil
    if info.name == MIN_JS:
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    data = _tarball([_file(MIN_JS, b"var OpenSeadragon;"), (info, body)])
    monkeypatch.setattr(assets, "pin", lambda: assets.Pin(version="5.0.1", integrity=sri(data)))  # hash matches
    with local_registry({tarball_path(): data}) as (url, _):
        monkeypatch.setenv("ACMIL_NPM_REGISTRY", url)
        with pytest.raises(assets.AssetsMissing, match="refused"):
            assets.ensure_assets()
    assert not (no_checkout_assets / "openseadragon-5.0.1").exists()
    assert not list(tmp_path.rglob("escaped.js")) and not (tmp_path.parent / "escaped.js").exists()


def test_offline_fails_fast_and_says_exactly_what_to_run(no_checkout_assets, monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on: connection refused, as offline
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("ACMIL_NPM_REGISTRY", dead)
    from acmil.service.routers.viewer import prepare_assets

    lines: list[str] = []
    start = time.monotonic()
    assert prepare_assets(None, lines.append) is None
    assert time.monotonic() - start < 10  # a hang bound: a refused connection is not retried or waited on
    said = "\n".join(lines)
    version = assets.pin().version
    placed = no_checkout_assets / f"openseadragon-{version}.tgz"
    assert f"curl -fL -o openseadragon-{version}.tgz {dead}/openseadragon/-/openseadragon-{version}.tgz" in said
    assert str(placed) in said and "`npm ci`" in said and "--viewer-assets" in said and "npm install" not in said

    placed.write_bytes(genuine_tarball())  # what the message says to do
    assert assets.ensure_assets(download=False) == no_checkout_assets / f"openseadragon-{version}" / "build"


def test_missing_assets_page_and_vendor_route_say_what_to_run(make_settings, tmp_path):
    from acmil.service.main import create_app

    app = create_app(make_settings(viewer_assets_dir=tmp_path / "nowhere"))
    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/")
        vendor = client.get("/vendor/openseadragon/openseadragon.min.js")
        docs = client.get("/api/v1/docs")
    assert page.status_code == 503 and "<code>npm ci</code>" in page.text and "npm install" not in page.text
    assert 'href="/api/v1/docs"' in page.text and docs.status_code == 200
    assert str(tmp_path / "nowhere") in page.text
    assert vendor.status_code == 503 and "openseadragon.min.js" in vendor.text and "Traceback" not in vendor.text


def test_vendor_route_serves_files_and_404s_unknown_ones(client):
    assert client.get("/").status_code == 200  # node_modules or the user cache (fetched on first use)
    script = client.get("/vendor/openseadragon/openseadragon.min.js")
    assert script.status_code == 200 and "OpenSeadragon" in script.text[:2000]
    assert client.get("/vendor/openseadragon/images/home_rest.png").headers["content-type"] == "image/png"
    assert client.get("/vendor/openseadragon/no-such-file.js").status_code == 404
    assert client.get("/vendor/openseadragon/..%2F..%2Fpackage.json").status_code == 404
