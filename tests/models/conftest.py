"""Fixtures of the model tests: checkpoints written the way the reference ACMIL code writes them."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch


def save_like_reference(path: Path, state_dict: dict, epoch: int, **config) -> Path:
    """``utils.utils.save_model`` of the reference: ``{'model', 'optimizer', 'epoch', 'config': Struct}``.

    ``Struct`` lives in a fake ``utils.utils`` module that exists only while pickling and is removed from
    ``sys.modules`` before anything reads the file, as on a machine without the reference code.
    """
    utils, utils_utils = types.ModuleType("utils"), types.ModuleType("utils.utils")

    class Struct:
        def __init__(self, **entries):
            self.__dict__.update(entries)

    Struct.__module__, Struct.__qualname__ = "utils.utils", "Struct"
    utils_utils.Struct, utils.utils = Struct, utils_utils
    saved = {name: sys.modules.get(name) for name in ("utils", "utils.utils")}
    sys.modules.update({"utils": utils, "utils.utils": utils_utils})
    try:
        params = [torch.zeros(2, requires_grad=True)]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        params[0].sum().backward()
        optimizer.step()
        torch.save(
            {"model": state_dict, "optimizer": optimizer.state_dict(), "epoch": epoch, "config": Struct(**config)}, path
        )
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    assert "utils.utils" not in sys.modules
    return path


@pytest.fixture(name="save_like_reference")
def _save_like_reference_fixture():
    return save_like_reference


# The config the reference's Step3_WSI_classification_ACMIL.py pickles: its YAML plus argparse values.
REFERENCE_CONFIG = {
    "train_epoch": 50,
    "B": 1,
    "warmup_epoch": 0,
    "wd": 1e-5,
    "lr": 1e-4,
    "min_lr": 0,
    "dataset": "camelyon",
    "data_dir": "/data/CAMELYON16/roi_feats",
    "n_worker": 8,
    "pin_memory": False,
    "n_shot": -1,
    "config": "config/camelyon_medical_ssl_config.yml",
    "eval_only": False,
    "seed": 1,
    "wandb_mode": "disabled",
    "pretrain": "medical_ssl",
}


@pytest.fixture(name="reference_config")
def _reference_config_fixture():
    return dict(REFERENCE_CONFIG)
