"""Slide jobs on a real ``acmil serve`` given two checkpoints: the job predicts with the ensemble."""

from __future__ import annotations

import time

import numpy as np

from acmil.checkpoint import load_model
from acmil.features import read_features
from acmil.inference import predict_bag
from tests.helpers.server import client, start_server, upload, wait_job
from tests.helpers.slides import make_checkpoint, make_slide


def test_a_slide_job_predicts_with_the_ensemble(recipe_run, tmp_path):
    second = make_checkpoint(tmp_path / "seed1.ckpt", recipe_run["recipe"], seed=1)
    features = tmp_path / "features"
    features.mkdir()
    server, base = start_server(
        recipe_run["checkpoint"], features, tmp_path / "jobs", tmp_path / "server.log", "--checkpoint", str(second)
    )
    try:
        c = client(base)
        assert c.get("/model").json()["ensemble_size"] == 2
        r = upload(c, make_slide(tmp_path / "in" / "case.tif", seed=32))
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
        assert job["state"] == "done", job["message"]
        # each member's own prediction of the published feature file, computed here without the service
        feats = read_features(features / f"{job['slide_id']}.h5").features
        own = []
        for ckpt in (recipe_run["checkpoint"], second):
            loaded = load_model(ckpt)
            own.append(predict_bag(loaded.model, feats, loaded.temperature).probabilities)
        assert not np.allclose(own[0], own[1])
        names = ["normal", "tumour"]
        got = [job["prediction"]["probabilities"][n] for n in names]
        np.testing.assert_allclose(got, np.mean(own, axis=0), atol=1e-5)
        members = [[m[n] for n in names] for m in job["prediction"]["model_probabilities"]]
        np.testing.assert_allclose(members, own, atol=1e-5)
        time.sleep(2.1)  # the registry rescans every 2 s
        pred = c.get(f"/slides/{job['slide_id']}/prediction").json()
        np.testing.assert_allclose([pred["probabilities"][n] for n in names], got, atol=1e-5)
    finally:
        server.stop()
