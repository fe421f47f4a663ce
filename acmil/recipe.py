"""The recipe of a model's features: how a slide becomes the feature file the model was trained on.

A recipe is a plain dict (it lives in the checkpoint card's ``encoder`` entry) with

- ``encoder`` (timm name), ``encoder_weights`` ("random" or a JSON record with ``source`` and ``sha256``),
  ``transform`` (resize, mean, std, ...);
- ``mpp_target`` (µm/px of the tiles), ``tile_size`` (px at that resolution), ``overlap``, ``min_tissue``;
- ``tissue_params`` (the segmentation settings), ``feature_dim``, ``tool_version``;
- ``recipe_hash``: a digest of every field above that changes the features (not ``tool_version``).

:func:`recipe_from_meta` reads it from one feature file's provenance; :func:`cohort_recipe` checks that a
training cohort agrees on it (a mixed cohort is refused with the counts of each variant).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from acmil.features import FeatureMeta, provenance, read_meta

# Fields that decide the features (hashed and compared); tool_version is recorded but not compared.
IDENTITY_KEYS = (
    "encoder",
    "encoder_weights",
    "transform",
    "mpp_target",
    "tile_size",
    "overlap",
    "min_tissue",
    "tissue_params",
    "feature_dim",
)
# What preprocessing a new slide needs at least.
REQUIRED_KEYS = ("encoder", "encoder_weights", "transform", "mpp_target", "tile_size", "tissue_params")


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def recipe_from_meta(meta: FeatureMeta) -> dict[str, Any]:
    """The recipe recorded in one feature file (format 1); fields the file lacks are absent."""
    attrs = meta.attrs
    recipe: dict[str, Any] = {k: v for k, v in provenance(attrs).items() if k != "mpp_level0"}
    tiling = _decoded(attrs.get("tiling_params")) or {}
    if not isinstance(tiling, dict):
        tiling = {}
    tile = tiling.get("tile_size", meta.coord_attrs.get("patch_size"))
    if tile is not None:
        recipe["tile_size"] = int(tile)
    if recipe.get("mpp_target") is None and tiling.get("target_mpp") is not None:
        recipe["mpp_target"] = float(tiling["target_mpp"])
    overlap = tiling.get("overlap", meta.coord_attrs.get("overlap"))
    if overlap is not None:
        recipe["overlap"] = int(overlap)
    if tiling.get("min_tissue") is not None:
        recipe["min_tissue"] = float(tiling["min_tissue"])
    if "mpp_target" in recipe:
        recipe["mpp_target"] = float(recipe["mpp_target"])
    recipe["feature_dim"] = int(meta.dim)
    recipe["recipe_hash"] = recipe_hash(recipe)
    return recipe


def recipe_from_file(path) -> dict[str, Any]:  # noqa: ANN001 - str or PathLike
    """The recipe of one feature file (``acmil import-checkpoint --recipe-from x.h5``)."""
    return recipe_from_meta(read_meta(path))


def identity(recipe: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide the features, with the weights reduced to what identifies them."""
    out = {k: recipe[k] for k in IDENTITY_KEYS if k in recipe}
    weights = _decoded(out.get("encoder_weights"))
    if isinstance(weights, dict):  # the same tensors from another file name are the same weights
        out["encoder_weights"] = {"sha256": weights.get("sha256"), "source": weights.get("source")}
    return out


def recipe_hash(recipe: dict[str, Any]) -> str:
    """16 hex digits over :func:`identity` (stable JSON)."""
    return hashlib.sha256(json.dumps(identity(recipe), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _describe(recipe: dict[str, Any]) -> str:
    weights = _decoded(recipe.get("encoder_weights"))
    if isinstance(weights, dict):
        weights = f"{weights.get('source')}:{str(weights.get('sha256'))[:12]}"
    return (
        f"{recipe.get('encoder')} weights={weights} {recipe.get('mpp_target')} µm/px "
        f"tile {recipe.get('tile_size')} overlap {recipe.get('overlap')}"
    )


def cohort_recipe(metas: Sequence[FeatureMeta]) -> tuple[dict[str, Any], list[str]]:
    """The recipe every file of a cohort shares, and the problems (one line when the files disagree).

    Files without provenance (foreign formats) are not compared (as for mixed encoders); a cohort of such
    files has a partial recipe.
    """
    if not metas:
        return {}, []
    recipes = [recipe_from_meta(m) for m in metas]
    known = [(m, r) for m, r in zip(metas, recipes, strict=True) if r.get("encoder")]
    if not known:
        return recipes[0], []

    def key(r: dict[str, Any]) -> str:  # feature widths are compared on their own, file by file
        return recipe_hash({k: v for k, v in r.items() if k != "feature_dim"})

    counts = Counter(key(r) for _, r in known)
    if len(counts) == 1:
        return known[0][1], []
    parts = []
    for h, n in counts.most_common():
        meta, r = next((m, r) for m, r in known if key(r) == h)
        parts.append(f"{n} file(s) with {_describe(r)} (e.g. {meta.path.name})")
    return known[0][1], [
        f"features come from different recipes: {'; '.join(parts)}; preprocess every slide "
        "with the same encoder, weights and tiling"
    ]


def missing_fields(recipe: dict[str, Any]) -> list[str]:
    """Fields preprocessing needs that the recipe lacks."""
    return [k for k in REQUIRED_KEYS if recipe.get(k) in (None, "", {})]


def contradictions(recipe: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Fields on which a feature file's recipe contradicts the model's, each naming both values."""
    a, b = identity(recipe), identity(other)
    return [f"{k}: model {a[k]!r}, file {b[k]!r}" for k in IDENTITY_KEYS if k in a and k in b and a[k] != b[k]]


def read_recipe_arg(recipe_from=None, recipe_json=None, encoder_name: str | None = None) -> dict[str, Any]:  # noqa: ANN001
    """The recipe given to ``acmil import-checkpoint``: from a feature file or a JSON file, checked."""
    if recipe_from is not None:
        recipe = recipe_from_file(recipe_from)
        where = str(recipe_from)
    else:
        try:
            recipe = json.loads(open(recipe_json, encoding="utf-8").read())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{recipe_json}: cannot read the recipe ({err})") from err
        if not isinstance(recipe, dict):
            raise ValueError(f"{recipe_json}: a recipe is a JSON object, not a {type(recipe).__name__}")
        where = str(recipe_json)
    if encoder_name and recipe.get("encoder") not in (None, encoder_name):
        raise ValueError(f"{where}: the recipe's encoder is {recipe.get('encoder')!r}, not --encoder {encoder_name!r}")
    missing = missing_fields(recipe)
    if missing:
        raise ValueError(f"{where}: the recipe lacks {missing} (a feature file of acmil preprocess has them all)")
    recipe["recipe_hash"] = recipe_hash(recipe)
    return recipe
