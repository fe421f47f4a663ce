"""The model card says what the model was trained on (slides, classes with counts, encoder, description), and
``GET /api/v1/model`` returns it, so the viewer can tell a model trained on synthetic slides."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient

from acmil.checkpoint import load_model
from acmil.synthetic.features import make_cohort

FAST = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.logger",
    "false",
    "--model.lr",
    "5e-3",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, repo_root):
    import torch

    from acmil.training.cli import run_train

    root = tmp_path_factory.mktemp("card")
    cohort = make_cohort(root / "cohort", n_slides=12, signal=3.0, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_train(
            [
                "--config",
                str(repo_root / "configs" / "acmil.yaml"),
                "--data.features_dir",
                str(cohort.features_dir),
                "--data.labels_csv",
                str(cohort.labels_csv),
                "--data.description",
                "synthetic feature bags (a test)",
                "--trainer.max_epochs",
                "1",
                "--trainer.default_root_dir",
                str(root / "run"),
                *FAST,
            ]
        )
    finally:
        torch.set_num_threads(threads)
    return {"cohort": cohort, "checkpoint": root / "run" / "checkpoints" / "best.ckpt"}


def test_card_and_model_route_carry_the_training_cohort(trained):
    cohort = trained["cohort"]
    card = load_model(trained["checkpoint"]).card
    expected = {
        "n_slides": 12,
        "classes": dict(Counter(cohort.labels.values())),
        "encoder": "synthetic",
        "description": "synthetic feature bags (a test)",
    }
    assert {k: card.extra["training_cohort"][k] for k in expected} == expected

    from acmil.service.config import Settings
    from acmil.service.main import create_app

    settings = Settings(checkpoint=trained["checkpoint"], features_dir=cohort.features_dir)
    with TestClient(create_app(settings)) as client:
        model = client.get("/api/v1/model").json()
    assert model["training_cohort"]["n_slides"] == 12
    assert model["training_cohort"]["classes"] == expected["classes"]
    assert model["training_cohort"]["description"] == "synthetic feature bags (a test)"
