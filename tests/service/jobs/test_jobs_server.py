"""Slide jobs on a real ``acmil serve`` (uvicorn subprocess) with the embedded SQLite huey queue:
upload -> stages -> prediction and viewer layers; dedup; bad input; limits; cancel; kill -9 and restart."""

from __future__ import annotations

import time

import httpx

from tests.helpers.server import client, start_server, upload, wait_job
from tests.helpers.slides import make_slide


def test_upload_to_prediction_end_to_end(recipe_run, tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    server, base = start_server(
        recipe_run["checkpoint"], features, tmp_path / "jobs", tmp_path / "server.log", "--max-jobs-per-client", "3"
    )
    try:
        c = client(base)
        assert httpx.post(base + "/api/v1/slides", content=b"x").status_code == 401  # the key covers the routes
        model = c.get("/model").json()  # the recipe, with tile size and µm/px filled from it
        assert model["tile_size"] == 64 and model["target_mpp"] == 2.0
        assert model["encoder"]["recipe_hash"] == recipe_run["recipe"]["recipe_hash"]
        slide = make_slide(tmp_path / "in" / "Case 7 (new).tif", seed=31)
        r = upload(c, slide)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert r.json()["state"] == "queued"  # the answer to the upload; a poll may already see the worker's stage
        assert upload(c, slide).json()["job_id"] == job_id  # the same content: the same job
        stages: list = []
        job = wait_job(c, job_id, seen=stages)
        assert job["state"] == "done", job["message"]
        assert [h[0] for h in job["history"]] == ["reading", "segmenting", "encoding", "predicting", "done"]
        assert job["history"][2][3] == job["tiles_total"] > 0  # encoding k/N tiles
        order = ["queued", "reading", "segmenting", "encoding", "predicting", "done"]
        seen = [order.index(s.split()[0]) for s in stages]
        assert seen == sorted(seen) and stages[-1] == "done"  # polls see the stages in order
        assert job["slide_id"] == "Case_7_new" and job["progress"] == 1.0 and job["elapsed_s"] > 0
        assert set(job["prediction"]["probabilities"]) == {"normal", "tumour"}
        assert set(job["seconds"]) >= {"reading", "segmenting", "encoding", "predicting"}
        time.sleep(2.1)  # the registry rescans every 2 s
        listed = {s["slide_id"]: s for s in c.get("/slides").json()}
        assert listed["Case_7_new"]["has_image"] and listed["Case_7_new"]["n_tiles"] == job["tiles_total"]
        pred = c.get("/slides/Case_7_new/prediction").json()
        assert abs(pred["probabilities"]["tumour"] - job["prediction"]["probabilities"]["tumour"]) < 1e-5
        assert c.get("/slides/Case_7_new/slide.dzi").status_code == 200
        assert c.get("/slides/Case_7_new/attention.dzi").status_code == 200
        assert c.get("/slides/Case_7_new/heatmap.png").status_code == 200
        # after done, the same upload answers 200 with the finished job
        again = upload(c, slide)
        assert again.status_code == 200 and again.json()["state"] == "done"
        raw = c.post(
            "/slides",
            params={"filename": "other name.tif"},
            content=slide.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )  # streamed body, same content
        assert raw.status_code == 200 and raw.json()["job_id"] == job_id
        assert c.post("/slides", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
        assert [j["job_id"] for j in c.get("/jobs").json()] == [job_id]
        # a non-slide is refused at once, with the name and the reason; nothing is queued
        bad = c.post("/slides", files={"file": ("notes.tif", b"II*\x00 this is no slide", "image/tiff")})
        assert bad.status_code == 422 and "notes.tif" in bad.json()["detail"]
        assert c.post("/slides", files={"file": ("x.exe", b"MZ", "application/octet-stream")}).status_code == 422
        assert len(c.get("/jobs").json()) == 1
        # never an arbitrary path: no import folder configured
        assert c.post("/slides", json={"path": "/etc/passwd"}).status_code == 403
        assert c.get("/jobs/nope").status_code == 404
        assert "Traceback" not in server.text()
    finally:
        server.stop()


def test_cancel_limits_and_import_folder(recipe_run, tmp_path):
    features, imports = tmp_path / "features", tmp_path / "imports"
    features.mkdir()
    for i in range(3):
        # s0 is cancelled while it runs: large enough that encoding lasts seconds on an idle machine
        make_slide(imports / f"s{i}.tif", seed=40 + i, width=8192 if i == 0 else 2048, height=6144 if i == 0 else 1536)
    server, base = start_server(
        recipe_run["checkpoint"],
        features,
        tmp_path / "jobs",
        tmp_path / "server.log",
        "--import-dir",
        str(imports),
        "--max-jobs-per-client",
        "2",
    )
    try:
        c = client(base)
        assert c.post("/slides", json={"path": "../features"}).status_code == 403
        assert c.post("/slides", json={"path": "missing.tif"}).status_code == 404
        first = c.post("/slides", json={"path": "s0.tif"})
        second = c.post("/slides", json={"path": "s1.tif"})
        assert first.status_code == second.status_code == 202
        third = c.post("/slides", json={"path": "s2.tif"})
        assert third.status_code == 429 and "limit 2" in third.json()["detail"]
        # cancel the queued one at once, the running one while it runs
        cancelled = c.delete(f"/jobs/{second.json()['job_id']}").json()
        assert cancelled["state"] == "cancelled"
        wait_job(c, first.json()["job_id"], until=("segmenting", "encoding", "done"))
        c.delete(f"/jobs/{first.json()['job_id']}")
        assert wait_job(c, first.json()["job_id"])["state"] == "cancelled"
        time.sleep(2.5)
        assert list(features.glob("*.h5")) == []  # nothing published
        # a cancelled job can be submitted again
        again = c.post("/slides", json={"path": "s1.tif"})
        assert again.status_code == 202 and wait_job(c, again.json()["job_id"])["state"] == "done"
        assert (features / "s1.h5").is_file()
    finally:
        server.stop()


def test_kill_9_mid_job_then_restart_completes(recipe_run, tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    # large enough that encoding lasts seconds on an idle machine: the poll must see it before it is done
    slide = make_slide(tmp_path / "in" / "big.tif", seed=51, width=8192, height=6144)
    jobs = tmp_path / "jobs"
    server, base = start_server(recipe_run["checkpoint"], features, jobs, tmp_path / "server1.log")
    c = client(base)
    try:
        job_id = upload(c, slide).json()["job_id"]
        job = wait_job(c, job_id, until=("encoding", "done", "failed"))
        assert job["state"] == "encoding", job
        server.kill9()
    finally:
        server.stop()
    # what the killed server left: no final feature file, no slide image, only .partial leftovers
    assert list(features.glob("*.h5")) == []
    assert not list((jobs / "slides").glob("big*.tif"))
    server, base = start_server(recipe_run["checkpoint"], features, jobs, tmp_path / "server2.log")
    try:
        c = client(base)
        job = wait_job(c, job_id)
        assert job["state"] == "done", job["message"]
        assert job["attempts"] == 2 and "requeued" not in (job["message"] or "")
        assert (features / "big.h5").is_file()
        time.sleep(2.1)
        assert "big" in {s["slide_id"] for s in c.get("/slides").json()}
        assert c.get("/slides/big/prediction").status_code == 200
    finally:
        server.stop()
