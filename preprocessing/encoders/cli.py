"""``acmil weights``: the local store of encoder weights, offline first.

    acmil weights list                       recipes, their files, whether each is in the store (and verified)
    acmil weights import NAME FILE|DIR       check a downloaded file (or hub snapshot folder) and store it
    acmil weights fetch NAME                 download into the store (online; HF_TOKEN for gated models)
    acmil weights verify [NAME ...]          re-hash stored files against their recorded sha256
    acmil weights show NAME                  the full recipe (constructor, transform, pooling, licence, source)

The store is $ACMIL_WEIGHTS_DIR, else $XDG_CACHE_HOME/acmil/weights (~/.cache/acmil/weights); then
``acmil preprocess --encoder NAME --weights pretrained`` reads it without touching the network.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import resolve, weights
from .errors import EncoderError
from .recipes import RECIPES, get_recipe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acmil weights",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="recipes, expected files, present / verified")
    imp = sub.add_parser("import", help="store a downloaded file or snapshot folder")
    imp.add_argument("name", help="recipe name (acmil weights list) or timm model name")
    imp.add_argument("path", type=Path, help="pytorch_model.bin / model.safetensors / .pth, or a folder holding it")
    fetch = sub.add_parser("fetch", help="download into the store (online)")
    fetch.add_argument("name")
    ver = sub.add_parser("verify", help="re-hash stored files")
    ver.add_argument("names", nargs="*", help="default: everything in the store")
    show = sub.add_parser("show", help="one recipe in full (JSON)")
    show.add_argument("name")
    return p


def _list() -> int:
    stored = set(weights.stored_names())
    print(f"store: {weights.store_root()}")
    print(f"{'name':<18} {'dim':>5}  {'present':<8} {'licence':<22} weights")
    for name, r in RECIPES.items():
        present = "yes" if name in stored else "-"
        if r.weights.packaged:
            present = "package" if resolve.packaged_file(r.weights.packaged) else "-"
        gated = " [gated]" if r.weights.gated else ""
        print(f"{name:<18} {r.dim:>5}  {present:<8} {r.licence[:22]:<22} {r.weights.where()}{gated}")
    others = sorted(stored - set(RECIPES))
    for name in others:
        print(f"{name:<18} {'':>5}  {'yes':<8} {'(timm name)':<22} {weights.find(name).path}")
    print("(any timm model name also works; acmil weights show NAME for a full recipe)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "list":
            return _list()
        if args.action == "show":
            recipe = get_recipe(args.name)
            if recipe is None:
                print(f"acmil weights: '{args.name}' is not a recipe (acmil weights list)", file=sys.stderr)
                return 2
            print(json.dumps(recipe.record(), indent=2))
            return 0
        if args.action == "import":
            stored = weights.import_weights(args.name, args.path)
            print(
                f"{args.name}: stored {stored.path} (sha256 {stored.sha256}); "
                f"use --encoder {args.name} --weights pretrained"
            )
            return 0
        if args.action == "fetch":
            stored = resolve.fetch(args.name)
            print(f"{args.name}: stored {stored.path} (sha256 {stored.sha256})")
            return 0
        names = args.names or weights.stored_names()
        if not names:
            print(f"acmil weights: the store is empty ({weights.store_root()})")
            return 0
        results = [weights.verify(n) for n in names]
        for _, msg in results:
            print(msg)
        return 0 if all(ok for ok, _ in results) else 1
    except EncoderError as err:
        print(f"acmil weights {args.action}: {err}", file=sys.stderr)
        return 1
