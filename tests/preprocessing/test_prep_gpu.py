"""On a CUDA device: autocast (bf16/fp16) features agree with fp32 CPU features (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from acmil.preprocessing.encoders import load_encoder
from acmil.preprocessing.extract import encode_batch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_autocast_features_match_fp32():
    tiles = torch.randint(0, 256, (8, 224, 224, 3), dtype=torch.uint8)
    cpu = encode_batch(load_encoder("resnet18", "random", device="cpu"), tiles, torch.device("cpu"), "fp32")
    gpu = encode_batch(load_encoder("resnet18", "random", device="cuda"), tiles, torch.device("cuda"), "auto")
    assert gpu.shape == cpu.shape == (8, 512) and gpu.dtype == cpu.dtype
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(gpu), torch.from_numpy(cpu), dim=1)
    assert cos.min().item() > 0.99
