"""The real server: ``acmil serve`` (uvicorn) on a loopback port under 20 concurrent clients."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.helpers.bags import LIVE_KEY

pytestmark = pytest.mark.slow
API = "/api/v1"
CLIENTS = 20
DURATION_S = 4.0


def _urls(base: str, with_image: bool) -> list[str]:
    urls = [
        f"{API}/health",
        f"{API}/slides",
        f"{API}/model",
        f"{API}/slides/synthetic_pos/prediction",
        f"{API}/slides/synthetic_neg/prediction",
        f"{API}/slides/synthetic_pos/attention?branch=1",
        f"{API}/slides/synthetic_neg/heatmap.png?max_size=256&colormap=viridis",
        f"{API}/slides/synthetic_pos/attention_files/12/1_1.png",
        f"{API}/slides/synthetic_pos/attention_files/9/0_0.png?colormap=magma",
    ]
    if with_image:
        slide = "CMU-1-Small-Region"
        urls += [
            f"{API}/slides/{slide}/slide_files/12/2_3.jpeg",
            f"{API}/slides/{slide}/slide_files/10/0_0.jpeg",
            f"{API}/slides/{slide}/attention_files/12/2_3.png",
            f"{API}/slides/{slide}/crop.jpg?x=448&y=448&size=224",
            f"{API}/slides/{slide}/heatmap.png?max_size=384&alpha=0.4",
        ]
    return [base + u for u in urls]


def test_twenty_concurrent_clients_get_no_errors(live_server, service_data):
    urls = _urls(live_server, (service_data["features"] / "CMU-1-Small-Region.h5").exists())
    stop = time.monotonic() + DURATION_S
    results: list[tuple[int, int, str]] = []  # (ok, errors, first error) per client
    lock = threading.Lock()

    def worker(offset: int) -> None:
        ok, errors, first = 0, 0, ""
        with httpx.Client(headers={"X-API-Key": LIVE_KEY}, timeout=30) as session:
            i = offset
            while time.monotonic() < stop:
                url = urls[i % len(urls)]
                i += 1
                try:
                    response = session.get(url)
                    if response.status_code == 200 and response.content:
                        ok += 1
                    else:
                        errors += 1
                        first = first or f"{url}: {response.status_code} {response.text[:200]}"
                except httpx.HTTPError as err:
                    errors += 1
                    first = first or f"{url}: {err!r}"
        with lock:
            results.append((ok, errors, first))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DURATION_S + 60)
    assert len(results) == CLIENTS
    failures = [r[2] for r in results if r[1]]
    assert not failures, failures[:3]
    total = sum(r[0] for r in results)
    print(f"{total} requests answered by {CLIENTS} clients in {DURATION_S:.0f} s, 0 errors")
    assert total >= CLIENTS * 2  # every client got answers, not just one each


def test_raw_traversal_paths_and_missing_key_on_the_real_server(live_server):
    host = urlparse(live_server)
    for path in [
        f"{API}/slides/../../../etc/passwd/prediction",
        f"{API}/slides/..%2F..%2Fetc%2Fpasswd",
        "/static/../../pyproject.toml",
        "/vendor/openseadragon/../../../../pyproject.toml",
    ]:
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        connection.request("GET", path, headers={"X-API-Key": LIVE_KEY})  # sent as-is, no normalisation
        response = connection.getresponse()
        body = response.read()
        assert response.status == 404, (path, response.status)
        assert b"root:" not in body and b"[project]" not in body
        connection.close()
    assert httpx.get(f"{live_server}{API}/health").status_code == 401
