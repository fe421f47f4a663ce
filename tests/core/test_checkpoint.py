"""Checkpoint loading: real checkpoints load with weights_only=True; broken or hostile files give one clear error.

A pickle payload (os.system creating a marker file) never runs: not in ``load_model`` (what ``serve``, the
analyses and ``predict`` use), not in ``acmil predict``, not in ``acmil import-checkpoint``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from acmil.checkpoint import ModelCard, load_model, save_model
from acmil.cli import main as cli_main
from acmil.features import write_features
from acmil.models import create_model

D, C = 16, 2


def _good_payload() -> dict:
    model = create_model("acmil", D, C, n_branches=3)
    card = ModelCard("acmil", {"n_branches": 3}, D, ["a", "b"])
    return {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "acmil": asdict(card)}


def _with_card(**changes) -> dict:
    payload = _good_payload()
    payload["acmil"].update(changes)
    return payload


class _Payload:
    """Pickles as a call of os.system that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_bad(path: Path, case: str) -> Path:
    if case == "random bytes":
        path.write_bytes(bytes(np.random.default_rng(0).integers(1, 127, 4096, dtype=np.uint8)))
    elif case == "truncated":
        torch.save(_good_payload(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "slide image":
        import tifffile

        tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8))
    elif case == "feature file":
        write_features(path, np.zeros((2, D), np.float32), np.zeros((2, 2), np.int64))
    else:
        payload = {
            "no card": {"state_dict": _good_payload()["state_dict"]},
            "a list": [1, 2, 3],
            "unknown arch": _with_card(arch="foo"),
            "extra card field": _with_card(colour="blue"),
            "n_branches=0": _with_card(arch_args={"n_branches": 0}),
            "no state_dict": {"acmil": _good_payload()["acmil"]},
            "in_dim 1e9": _with_card(in_dim=1_000_000_000),
            "hidden_dim 1e9": _with_card(arch_args={"hidden_dim": 1_000_000_000}),
            "wrong shapes": _with_card(in_dim=32),
            "no classes": _with_card(class_names=[]),
            "card is a list": _with_card() | {"acmil": ["acmil"]},
        }[case]
        torch.save(payload, path)
    return path


BAD = {
    "random bytes": r"not a checkpoint \(not a file written by torch\.save\)",
    "truncated": r"cannot read checkpoint \(truncated or damaged",
    "empty": r"not a checkpoint \(an empty file\)",
    "slide image": r"not a checkpoint \(a TIFF image \(a slide\?\)\)",
    "feature file": r"not a checkpoint \(an HDF5 file \(a feature file\?\)\)",
    "no card": r"not an acmil checkpoint \(no 'acmil' model card\).*import-checkpoint",
    "a list": r"not a checkpoint \(a list, not a dict\)",
    "unknown arch": r"unknown architecture 'foo' \(known: abmil, acmil, acmil_mha, max, mean\)",
    "extra card field": r"unknown field\(s\) \['colour'\]",
    "n_branches=0": r"does not build a 'acmil' model \(n_branches must be >= 1, got 0\)",
    "no state_dict": r"no 'state_dict' \(the model's weights\)",
    "in_dim 1e9": r"in_dim 1000000000 is implausible",
    "hidden_dim 1e9": r"arch_args\.hidden_dim 1000000000 is implausible",
    "wrong shapes": r"the weights do not match the model card: .* is \(128, 8\) in the file but \(128, 16\)",
    "no classes": r"0 class names is implausible",
    "card is a list": r"the model card is a list, not a mapping",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_checkpoint_gives_one_clear_error_naming_the_file(tmp_path, case):
    path = _write_bad(tmp_path / "x.svs" if case == "slide image" else tmp_path / "x.ckpt", case)
    with pytest.raises(ValueError, match=BAD[case]) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: ")


def test_predict_with_a_slide_as_checkpoint_says_so(tmp_path, capsys):
    slide = _write_bad(tmp_path / "x.svs", "slide image")
    feats = tmp_path / "f"
    feats.mkdir()
    write_features(feats / "s.h5", np.zeros((2, D), np.float32), np.zeros((2, 2), np.int64))
    code = cli_main(["predict", "--checkpoint", str(slide), "--features", str(feats), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code != 0 and "x.svs: not a checkpoint (a TIFF image (a slide?))" in err
    assert "Traceback" not in err and "could not convert" not in err


def test_a_pickle_payload_never_runs(tmp_path, capsys):
    """load_model (serve's loader), calibrate, acmil predict and acmil import-checkpoint refuse without running it."""
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.ckpt"
    torch.save({**_good_payload(), "note": _Payload(marker)}, evil)
    ref_evil = tmp_path / "evil_ref.pth"
    ref_state = {"dimreduction.fc1.weight": torch.zeros(8, D)}
    torch.save({"model": ref_state, "epoch": 1, "config": _Payload(marker)}, ref_evil)

    with pytest.raises(ValueError, match=r"refused: .*\(posix\.system\); nothing in it was run"):
        load_model(evil)
    from acmil.evaluation.temperature import write_temperature  # acmil calibrate rewrites the checkpoint

    with pytest.raises(ValueError, match="refused"):
        write_temperature(evil, 2.0, tmp_path / "calibrated.ckpt")
    feats = tmp_path / "f"
    feats.mkdir()
    write_features(feats / "s.h5", np.zeros((2, D), np.float32), np.zeros((2, 2), np.int64))
    assert cli_main(["predict", "--checkpoint", str(evil), "--features", str(feats), "--out", str(tmp_path / "p.csv")])
    assert cli_main(["import-checkpoint", str(ref_evil), "--out", str(tmp_path / "o.ckpt")]) == 1
    assert cli_main(["import-checkpoint", str(evil), "--out", str(tmp_path / "o.ckpt")]) == 1
    err = capsys.readouterr().err
    assert "evil.ckpt" in err and "evil_ref.pth" in err
    assert not marker.exists(), "a pickled os.system ran"
    assert not (tmp_path / "o.ckpt").exists()
    # and the server itself, started on it, refuses to start without running it
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    served = subprocess.run(
        [sys.executable, "-m", "acmil", "serve", "--checkpoint", str(evil), "--features", str(feats), "--port", port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "evil.ckpt: refused" in served.stderr and not marker.exists()


def test_save_and_load_round_trip(tmp_path):
    model = create_model("acmil_mha", D, C, n_branches=2)
    card = ModelCard("acmil_mha", {"n_branches": 2}, D, ["a", "b"], extra={"epoch": 4})
    loaded = load_model(save_model(tmp_path / "m.ckpt", model, card))
    assert loaded.card == card and not loaded.model.training
    x = torch.randn(1, 5, D)
    torch.testing.assert_close(loaded.model(x).logits, model.eval()(x).logits)


def test_a_real_lightning_checkpoint_loads_with_weights_only(tmp_path, repo_root, monkeypatch):
    """``acmil train --config configs/acmil_mha.yaml`` trains, and its best.ckpt (Lightning's hyper_parameters,
    loops, callbacks and optimizer states included) holds only what weights_only=True allows."""
    import pickletools
    import zipfile

    from acmil.synthetic.features import make_cohort
    from acmil.training.cli import run_train

    monkeypatch.chdir(repo_root)
    torch.set_num_threads(1)
    cohort = make_cohort(tmp_path / "cohort", n_slides=16, signal=3.0, seed=0)
    run = tmp_path / "run"
    run_train(
        [
            "--config",
            "configs/acmil_mha.yaml",
            "--data.features_dir",
            str(cohort.features_dir),
            "--data.labels_csv",
            str(cohort.labels_csv),
            "--trainer.max_epochs",
            "2",
            "--trainer.default_root_dir",
            str(run),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.accelerator",
            "cpu",
            "--model.lr",
            "5e-3",
        ]
    )
    ckpt = run / "checkpoints" / "best.ckpt"
    raw = torch.load(ckpt, weights_only=True)
    assert {"hyper_parameters", "loops", "callbacks", "optimizer_states", "lr_schedulers", "acmil"} <= set(raw)
    with zipfile.ZipFile(ckpt) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL", "INST")}
    assert names <= {"collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch FloatStorage"}, names
    loaded = load_model(ckpt)
    assert loaded.card.arch == "acmil_mha" and type(loaded.model).__name__ == "ACMILMHA"
    out = loaded.model(torch.randn(1, 30, loaded.card.in_dim))
    assert out.attention.shape == (1, 5, 30)
