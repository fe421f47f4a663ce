"""``acmil predict`` with several checkpoints (or a cv directory): averaged probabilities, checked by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from acmil.checkpoint import ModelCard, build_model, save_model
from acmil.cli import main
from acmil.features import read_features
from acmil.synthetic.features import make_cohort

NAMES = ["normal", "tumour"]


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _checkpoint(
    path: Path, seed: int, temperature: float | None = None, in_dim: int = 32, names: list[str] = NAMES
) -> torch.nn.Module:
    torch.manual_seed(seed)
    card = ModelCard(
        arch="acmil",
        arch_args={"hidden_dim": 16},
        in_dim=in_dim,
        class_names=list(names),
        encoder={"encoder": "synthetic"},
        extra={} if temperature is None else {"temperature": temperature},
    )
    model = build_model(card).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model, card)
    return model


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory: pytest.TempPathFactory):
    return make_cohort(tmp_path_factory.mktemp("ens_cohort"), n_slides=6, seed=3)


def test_cv_directory_ensemble_averages_tempered_probabilities(small_cohort, tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    temps = [1.0, 2.5, 0.7]
    models = [
        _checkpoint(
            cv / f"fold_{k}" / "checkpoints" / "best.ckpt", seed=10 + k, temperature=None if k == 0 else temps[k]
        )
        for k in range(3)
    ]
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(cv),
                "--features",
                str(small_cohort.features_dir),
                "--out",
                str(out),
                "--per-model",
            ]
        )
        == 0
    )
    rows = _csv(out)
    assert len(rows) == 6
    assert list(rows[0])[:4] == ["slide_id", "predicted", "prob_normal", "prob_tumour"]
    assert "m2_prob_tumour" in rows[0]
    for row in rows:
        feats = torch.from_numpy(read_features(small_cohort.features_dir / f"{row['slide_id']}.h5").features)
        with torch.no_grad():  # by hand: softmax(logits / T) per model, then the plain mean
            each = np.stack(
                [torch.softmax(m(feats[None]).logits[0] / t, -1).numpy() for m, t in zip(models, temps, strict=True)]
            )
        mean = each.mean(axis=0)
        got = np.array([float(row["prob_normal"]), float(row["prob_tumour"])])
        np.testing.assert_allclose(got, mean, atol=2e-6)
        for k in range(3):
            np.testing.assert_allclose([float(row[f"m{k}_prob_{c}"]) for c in NAMES], each[k], atol=2e-6)
        assert row["predicted"] == NAMES[int(mean.argmax())]
    # The same ensemble given checkpoint by checkpoint gives the same CSV (without the per-model columns).
    again = tmp_path / "again.csv"
    args = [a for k in range(3) for a in ("--checkpoint", str(cv / f"fold_{k}" / "checkpoints" / "best.ckpt"))]
    assert main(["predict", *args, "--features", str(small_cohort.features_dir), "--out", str(again)]) == 0
    assert [{k: r[k] for k in _csv(again)[0]} for r in rows] == _csv(again)


def test_ensemble_attention_per_model_and_averaged(small_cohort, tmp_path: Path) -> None:
    from acmil.ensemble import load_ensemble

    paths = [tmp_path / f"m{k}.ckpt" for k in range(2)]
    for k, p in enumerate(paths):
        _checkpoint(p, seed=k)
    ensemble = load_ensemble(paths)
    feats = read_features(next(iter(sorted(small_cohort.features_dir.glob("*.h5"))))).features
    pred = ensemble.predict(feats)
    assert pred.member_attention.shape == (2, feats.shape[0])
    np.testing.assert_allclose(pred.mean_attention, pred.member_attention.mean(0))
    np.testing.assert_allclose(pred.member_attention.sum(axis=1), 1.0, atol=1e-5)  # softmax over patches


@pytest.mark.parametrize(
    ("kwargs", "what"), [({"names": ["benign", "tumour"]}, "class names"), ({"in_dim": 16}, "feature width")]
)
def test_mismatched_checkpoints_are_refused_naming_both(
    small_cohort, tmp_path: Path, kwargs, what, capsys: pytest.CaptureFixture
) -> None:
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    _checkpoint(a, seed=0)
    _checkpoint(b, seed=1, **kwargs)
    out = tmp_path / "pred.csv"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(a),
            "--checkpoint",
            str(b),
            "--features",
            str(small_cohort.features_dir),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert str(a) in err and str(b) in err and what in err and "Traceback" not in err


def test_a_directory_without_checkpoints_is_refused(
    small_cohort, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tmp_path),
            "--features",
            str(small_cohort.features_dir),
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 2 and "cv directory" in capsys.readouterr().err
