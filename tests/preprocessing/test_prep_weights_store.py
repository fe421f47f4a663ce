"""`acmil weights` and `--weights pretrained` offline: fail in seconds with the whole message, import / list /
verify with sha256, clear errors for missing or changed files, provenance of the recipe in every feature file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from acmil.cli import main as acmil_main
from acmil.features import provenance, read_features
from acmil.preprocessing.encoders import RECIPES, WeightsUnavailable, load_encoder, offline
from acmil.preprocessing.encoders.build import skeleton


@pytest.fixture
def tmp_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ACMIL_WEIGHTS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "store"


def _vits16_file(path: Path) -> Path:
    torch.manual_seed(11)
    torch.save(skeleton(RECIPES["kaiko_vits16"], "cpu").state_dict(), path)
    return path


def test_offline_pretrained_fails_in_seconds_with_the_whole_message(tmp_path):
    """No HF_HUB_OFFLINE, and a hub that refuses connections: before, ~50 s of retries and a cut message naming
    timm/resnet50; now the probe decides at once."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "ACMIL_OFFLINE")}
    env.update(
        HF_ENDPOINT="http://127.0.0.1:9", ACMIL_WEIGHTS_DIR=str(tmp_path / "store"), HF_HOME=str(tmp_path / "hf")
    )
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "a.svs").write_bytes(b"not read: the encoder fails first")
    t0 = time.perf_counter()  # the same process start and imports, without the encoder: the baseline
    subprocess.run([sys.executable, "-c", "import timm, acmil.preprocessing.cli"], env=env, check=True, timeout=120)
    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "acmil",
            "preprocess",
            "--slides",
            str(slides),
            "--out",
            str(tmp_path / "out"),
            "--encoder",
            "resnet50_trunc",
            "--weights",
            "pretrained",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "https://huggingface.co/timm/resnet50.tv_in1k/resolve/main/model.safetensors" in err
    assert "acmil weights import resnet50_trunc" in err and "--weights pretrained" in err
    assert "no connection to 127.0.0.1:9" in err and "Retrying" not in err
    assert str(tmp_path / "store" / "resnet50_trunc") in err  # where the file goes
    assert "--encoder efficientnet_lite0 --weights pretrained" in err  # what works offline now
    # huggingface_hub's retries alone sleep 1+2+4+8+8 s per file (two files: ~46 s): the probe decides at once
    assert elapsed - imports < 15, f"{elapsed:.1f} s against {imports:.1f} s for the imports alone"  # a hang bound


def test_offline_failure_is_immediate_in_process(tmp_store):
    import timm  # noqa: F401 - imported first: the timing is of the resolution, not of timm's import

    t0 = time.perf_counter()
    with pytest.raises(
        WeightsUnavailable,
        match=r"(?s)gated: accept the terms on https://huggingface."
        r"co/MahmoodLab/UNI first.*co/MahmoodLab/UNI/resolve/main/pytorch_model.bin.*weights import uni_v1",
    ):
        load_encoder("uni_v1", "pretrained")
    with pytest.raises(WeightsUnavailable, match=r"(?s)releases/download/0.0.1/vits16.pth.*ungated copy"):
        load_encoder("kaiko_vits16", "pretrained")
    with pytest.raises(WeightsUnavailable, match="timm/resnet18.a1_in1k/resolve/main/model.safetensors"):
        load_encoder("resnet18", "pretrained")  # plain timm names: the exact repository of the default tag
    assert time.perf_counter() - t0 < 15  # a hang bound: huggingface_hub's retries sleep ~46 s for two files


def test_probe_reads_hf_endpoint(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(offline, "_decided", [])
    assert offline.hub_address() == ("127.0.0.1", 9)
    t0 = time.perf_counter()
    assert "no connection to 127.0.0.1:9" in offline.offline_reason()
    assert time.perf_counter() - t0 < offline.PROBE_TIMEOUT_S + 5  # a hang bound: the probe gives up on its own


def test_going_offline_leaves_the_environment_alone(monkeypatch):
    import os

    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(offline, "_decided", [])
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    offline.go_offline("no connection to test:1")
    assert hf_constants.HF_HUB_OFFLINE is True and offline.offline_reason() == "no connection to test:1"
    assert "HF_HUB_OFFLINE" not in os.environ


def test_weights_cli_import_list_verify(tmp_store, tmp_path, capsys):
    src = _vits16_file(tmp_path / "vits16.pth")
    assert acmil_main(["weights", "import", "kaiko_vits16", str(src)]) == 0
    out = capsys.readouterr().out
    assert "kaiko_vits16: stored" in out and "--weights pretrained" in out
    manifest = json.loads((tmp_store / "kaiko_vits16" / "acmil-weights.json").read_text())
    assert len(manifest["files"]["vits16.pth"]["sha256"]) == 64 and manifest["source"] == str(src)
    assert acmil_main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.startswith("kaiko_vits16"))
    assert " yes " in line and "vits16.pth" in line
    assert "[gated]" in next(ln for ln in listing.splitlines() if ln.startswith("uni_v2"))
    assert acmil_main(["weights", "verify"]) == 0 and "verified" in capsys.readouterr().out
    stored = tmp_store / "kaiko_vits16" / "vits16.pth"
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")  # corrupted after import
    assert acmil_main(["weights", "verify", "kaiko_vits16"]) == 1
    msg = capsys.readouterr().out
    assert str(stored) in msg and "differs from the recorded" in msg and "acmil weights import kaiko_vits16" in msg
    assert acmil_main(["weights", "show", "virchow2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pooling"] == "cls+mean" and shown["weights"]["repo"] == "paige-ai/Virchow2"


def test_weights_cli_refuses_wrong_and_missing_files(tmp_store, tmp_path, capsys):
    src = _vits16_file(tmp_path / "vits16.pth")
    assert acmil_main(["weights", "import", "lunit_vits8", str(src)]) == 1  # a ViT-S/16 file for a ViT-S/8 recipe
    err = capsys.readouterr().err
    assert "vits16.pth: not a checkpoint of recipe 'lunit_vits8'" in err and "patch_embed.proj.weight" in err
    assert acmil_main(["weights", "import", "uni_v1", str(tmp_path / "nope.bin")]) == 1
    assert "nope.bin: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert acmil_main(["weights", "import", "uni_v1", str(tmp_path / "empty")]) == 1
    assert "holds none of pytorch_model.bin" in capsys.readouterr().err
    assert acmil_main(["weights", "fetch", "uni_v1"]) == 1  # offline: the same full instructions
    assert "huggingface.co/MahmoodLab/UNI" in capsys.readouterr().err


def test_weights_run_functions_and_config_files(tmp_store, tmp_path, capsys):
    """Each sub-command is a run_weights_* call; its options also come from --config (keyed by sub-command)."""
    from acmil.preprocessing.encoders.cli import (
        NotARecipeError,
        WeightsImportConfig,
        WeightsNameConfig,
        WeightsVerifyConfig,
        run_weights_import,
        run_weights_list,
        run_weights_show,
        run_weights_verify,
    )

    src = _vits16_file(tmp_path / "vits16.pth")
    stored = run_weights_import(WeightsImportConfig(name="kaiko_vits16", path=src))
    assert stored.path == tmp_store / "kaiko_vits16" / "vits16.pth" and len(stored.sha256) == 64
    row = next(r for r in run_weights_list().rows if r.name == "kaiko_vits16")
    assert row.present == "yes" and row.dim == RECIPES["kaiko_vits16"].dim
    assert run_weights_verify(WeightsVerifyConfig()).ok
    assert run_weights_show(WeightsNameConfig(name="virchow2"))["pooling"] == "cls+mean"
    with pytest.raises(NotARecipeError, match="'nope' is not a recipe"):
        run_weights_show(WeightsNameConfig(name="nope"))
    assert acmil_main(["weights", "import", "kaiko_vits16", str(src), "--print_config"]) == 0
    (tmp_path / "import.yaml").write_text(capsys.readouterr().out)
    assert acmil_main(["weights", "import", "--config", str(tmp_path / "import.yaml")]) == 0
    assert "kaiko_vits16: stored" in capsys.readouterr().out


def test_feature_files_record_the_recipe(syn_cohort, tmp_path, tmp_store):
    slides = tmp_path / "in"
    slides.mkdir()
    (slides / "syn_001_tumour.tif").symlink_to(syn_cohort / "slides" / "syn_001_tumour.tif")
    args = [
        "preprocess",
        "--slides",
        str(slides),
        "--out",
        str(tmp_path / "out"),
        "--encoder",
        "kaiko_vits16",
        "--weights",
        "random",
        "--resize",
        "none",
        "--tile-size",
        "64",
        "--target-mpp",
        "2.0",
        "--no-progress",
        "--workers",
        "0",
    ]
    assert acmil_main(args) == 0
    feats = read_features(tmp_path / "out" / "features" / "syn_001_tumour.h5")
    assert feats.features.shape[1] == 384
    prov = provenance(feats.attrs)  # what the checkpoint card carries
    rec = prov["encoder_recipe"]
    assert rec["name"] == "kaiko_vits16" and rec["constructor"] == "timm:vit_small_patch16_224"
    assert rec["kwargs"]["dynamic_img_size"] is True and rec["pooling"] == "model" and rec["precision"] == "fp32"
    assert rec["licence"].startswith("Kaiko Non-Commercial") and rec["weights"]["url"].endswith("vits16.pth")
    assert rec["transform"]["mean"] == [0.5, 0.5, 0.5] and rec["transform"]["resize"] is None  # --resize none
