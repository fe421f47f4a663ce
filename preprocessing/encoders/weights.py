"""The local weights store: ``acmil weights import`` puts checked files here, ``--weights pretrained`` reads here.

Layout: ``<root>/<name>/<file>`` plus ``<root>/<name>/acmil-weights.json`` (file names, sha256, bytes, where
they came from, when). ``<root>`` is ``$ACMIL_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/acmil/weights`` (default
``~/.cache/acmil/weights``). ``<name>`` is a recipe name or a timm model name. A file is checked against the
recipe's key layout (names and shapes, strict) before it is stored, so a file for another model is refused at
import, not at the first slide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from acmil.atomic import atomic_path, write_json

from .errors import EncoderError
from .recipes import Recipe, get_recipe

MANIFEST = "acmil-weights.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".torch")


def store_root() -> Path:
    if os.environ.get("ACMIL_WEIGHTS_DIR"):
        return Path(os.environ["ACMIL_WEIGHTS_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "acmil" / "weights"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class StoredWeights:
    name: str
    path: Path  # the weights file
    sha256: str
    source: str


def entry_dir(name: str) -> Path:
    return store_root() / name


def _manifest(name: str) -> dict | None:
    path = entry_dir(name) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find(name: str) -> StoredWeights | None:
    """The stored weights file of ``name`` (not re-hashed: ``verify`` does that), or None."""
    man = _manifest(name)
    if not man:
        return None
    path = entry_dir(name) / man["weights_file"]
    if not path.is_file():
        return None
    return StoredWeights(name, path, man["files"][man["weights_file"]]["sha256"], man.get("source", ""))


def _pick_file(src: Path, recipe: Recipe | None) -> Path:
    """A weights file, or the recipe's preferred file inside a folder (a hub snapshot or download folder)."""
    if src.is_file():
        return src
    if not src.is_dir():
        raise EncoderError(f"{src}: no such file or folder")
    if (src / "snapshots").is_dir():  # a repository folder of the Hugging Face cache: its current snapshot
        ref = src / "refs" / "main"
        snaps = sorted((src / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime)
        src = src / "snapshots" / ref.read_text().strip() if ref.is_file() else (snaps[-1] if snaps else src)
    names = recipe.weights.files if recipe else ("model.safetensors", "pytorch_model.bin")
    for fname in names:
        if fname.endswith(WEIGHT_SUFFIXES) and (src / fname).is_file():
            return src / fname
    found = sorted(p.name for p in src.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    raise EncoderError(
        f"{src}: folder holds none of {', '.join(n for n in names if n.endswith(WEIGHT_SUFFIXES))}"
        + (f" (it has {', '.join(found[:5])}: pass the file itself)" if found else "")
    )


def check_file(name: str, path: Path) -> None:
    """Raise unless ``path`` loads into ``name``'s model with strict=True (built on meta: no memory used)."""
    from .build import check_layout, load_transformers, read_state_dict, skeleton

    recipe = get_recipe(name)
    if recipe is None:
        import timm

        if not timm.is_model(name):
            raise EncoderError(f"unknown encoder '{name}' (acmil weights list shows the recipes; or a timm name)")
        return  # timm names: timm's own loader checks the file (it drops a classifier of another size)
    if recipe.backend == "transformers":
        if not (path.parent / "config.json").is_file():
            raise EncoderError(f"{path.parent}: config.json is missing (recipe '{name}' needs it beside {path.name})")
        load_transformers(recipe, path)  # its own key renaming, then no key may be missing or left over
        return
    model = skeleton(recipe, "meta", config_dir=path.parent)
    check_layout(read_state_dict(path), model, recipe, path)


def import_weights(name: str, src: Path, source: str | None = None) -> StoredWeights:
    """Check ``src`` (a file, or a folder holding the recipe's file) for ``name`` and copy it into the store."""
    recipe = get_recipe(name)
    path = _pick_file(Path(src).expanduser().resolve(), recipe)
    check_file(name, path)
    dest = entry_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    copies = [path]
    if recipe and recipe.backend == "transformers":  # the model's config travels with it
        cfg = path.parent / "config.json"
        if not cfg.is_file():
            raise EncoderError(f"{path.parent}: config.json is missing (recipe '{name}' needs it beside {path.name})")
        copies.append(cfg)
    files = {}
    for item in copies:
        with atomic_path(dest / item.name) as tmp:
            shutil.copyfile(item, tmp)
        files[item.name] = {"sha256": sha256_file(dest / item.name), "bytes": (dest / item.name).stat().st_size}
    write_json(
        dest / MANIFEST,
        {
            "name": name,
            "weights_file": path.name,
            "files": files,
            "source": source or str(path),
            "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return StoredWeights(name, dest / path.name, files[path.name]["sha256"], source or str(path))


def verify(name: str) -> tuple[bool, str]:
    """Re-hash ``name``'s stored files against the manifest: (ok, message)."""
    man = _manifest(name)
    if not man:
        return False, f"{name}: not in the store ({entry_dir(name)})"
    for fname, info in man["files"].items():
        path = entry_dir(name) / fname
        if not path.is_file():
            return False, f"{path}: missing (acmil weights import {name} FILE)"
        digest = sha256_file(path)
        if digest != info["sha256"]:
            return (
                False,
                f"{path}: sha256 {digest[:12]}… differs from the recorded {info['sha256'][:12]}… "
                f"(file changed or corrupt: acmil weights import {name} FILE again)",
            )
    return (
        True,
        f"{name}: {', '.join(man['files'])} verified (sha256 {man['files'][man['weights_file']]['sha256'][:12]}…)",
    )


def stored_names() -> list[str]:
    root = store_root()
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []
