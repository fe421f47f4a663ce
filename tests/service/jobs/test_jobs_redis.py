"""The same slide jobs on a real ``redis-server`` (started here on a loopback port) with two ``acmil worker``
processes; the server runs no job itself. Also ``acmil serve --watch``."""

from __future__ import annotations

import shutil
import sys
import time

import httpx

from tests.helpers.server import Proc, client, free_port, start_server, wait_job
from tests.helpers.slides import make_slide


def _redis(binary: str, tmp_path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        tmp_path / "redis.log",
    )
    import redis

    conn = redis.Redis(port=port)
    for _ in range(100):
        try:
            if conn.ping():
                break
        except redis.ConnectionError:
            time.sleep(0.1)
    return proc, f"redis://127.0.0.1:{port}/0"


def test_two_workers_on_redis(recipe_run, redis_server_bin, tmp_path):
    features, imports = tmp_path / "features", tmp_path / "imports"
    features.mkdir()
    for i in range(4):
        make_slide(imports / f"r{i}.tif", seed=60 + i, width=2048, height=1536)
    redis_proc, url = _redis(redis_server_bin, tmp_path)
    workers = [
        Proc([sys.executable, "-m", "acmil", "worker", "--queue", url], tmp_path / f"worker{i}.log") for i in range(2)
    ]
    server = None
    try:
        server, base = start_server(
            recipe_run["checkpoint"],
            features,
            tmp_path / "jobs",
            tmp_path / "server.log",
            "--queue",
            url,
            "--no-embedded-worker",
            "--import-dir",
            str(imports),
        )
        c = client(base)
        ids = [c.post("/slides", json={"path": f"r{i}.tif"}).json()["job_id"] for i in range(4)]
        done = [wait_job(c, job_id, timeout=400) for job_id in ids]
        assert [j["state"] for j in done] == ["done"] * 4, [j["message"] for j in done]
        pids = {j["worker"] for j in done}
        assert len(pids) == 2, pids  # both workers took jobs
        assert all(str(w.p.pid) in "".join(pids) for w in workers)
        time.sleep(2.1)
        assert {f"r{i}" for i in range(4)} <= {s["slide_id"] for s in c.get("/slides").json()}
        for w in workers:  # one model load per worker process, whatever the number of jobs
            assert "waiting for slide jobs" in w.text() and "Traceback" not in w.text()
    finally:
        for p in ([server] if server else []) + workers + [redis_proc]:
            p.stop()


def test_watch_folder_queues_new_slides_once_complete(recipe_run, tmp_path):
    features, watch = tmp_path / "features", tmp_path / "scanner"
    features.mkdir()
    watch.mkdir()
    server, base = start_server(
        recipe_run["checkpoint"], features, tmp_path / "jobs", tmp_path / "server.log", "--watch", str(watch)
    )
    try:
        c = client(base)
        slide = make_slide(tmp_path / "made" / "scan01.tif", seed=71)
        data = slide.read_bytes()
        target = watch / "scan01.tif"
        with target.open("wb") as f:  # written slowly, as a scanner does: not queued while it grows
            for k in range(0, len(data), len(data) // 4 + 1):
                f.write(data[k : k + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.6)
                assert c.get("/jobs").json() == []
        (watch / "readme.txt").write_text("not a slide")
        deadline = time.monotonic() + 30
        while not c.get("/jobs").json() and time.monotonic() < deadline:
            time.sleep(0.3)
        jobs = c.get("/jobs").json()
        assert len(jobs) == 1 and jobs[0]["source"] == "watch"
        assert wait_job(c, jobs[0]["job_id"])["state"] == "done"
        shutil.copy(target, watch / "scan01_copy.tif")  # the same content again: the same job, nothing new
        time.sleep(4)
        assert len(c.get("/jobs").json()) == 1
        assert httpx.get(base + "/api/v1/jobs").status_code == 401
    finally:
        server.stop()
