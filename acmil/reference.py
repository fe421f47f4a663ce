"""``acmil import-checkpoint``: turn a checkpoint of the public ACMIL code (class ``ACMIL_GA``) into ours."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _extract_state_dict(obj: Any, path: Path) -> dict:
    """The reference saves ``{'model': state_dict, 'optimizer': ..., ...}``; plain state dicts also occur."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if any(k.endswith("dimreduction.fc1.weight") for k in obj):
            return obj
    raise ValueError(f"{path}: no ACMIL_GA state dict found (expected keys such as 'dimreduction.fc1.weight')")


def import_reference(
    ref_path: str | Path,
    out_path: str | Path,
    class_names: list[str] | None = None,
    top_k: int = 10,
    mask_ratio: float = 0.6,
    encoder: dict[str, Any] | None = None,
) -> Path:
    """Convert a reference ``ACMIL_GA`` checkpoint into a checkpoint this project trains on and serves."""
    import torch

    from acmil.checkpoint import ModelCard, save_model
    from acmil.models import ACMIL

    ref_path = Path(ref_path)
    if not ref_path.is_file():
        raise FileNotFoundError(f"{ref_path}: reference checkpoint not found")
    try:
        obj = torch.load(ref_path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise ValueError(f"{ref_path}: cannot read checkpoint ({err})") from err
    try:
        model = ACMIL.from_reference_state_dict(_extract_state_dict(obj, ref_path), top_k=top_k, mask_ratio=mask_ratio)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{ref_path}: {err}") from err
    names = class_names or [f"class_{i}" for i in range(model.n_classes)]
    if len(names) != model.n_classes:
        raise ValueError(f"{ref_path}: the model has {model.n_classes} classes but {len(names)} names were given")
    card = ModelCard(
        arch="acmil",
        arch_args={
            "n_branches": model.n_branches, "top_k": top_k, "mask_ratio": mask_ratio,
            "hidden_dim": model.hidden_dim, "attn_dim": model.attention.attention_V[0].out_features,
        },
        in_dim=model.in_dim,
        class_names=list(names),
        encoder=encoder or {},
        extra={"imported_from": str(ref_path)},
    )
    return save_model(out_path, model, card)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="acmil import-checkpoint", description=__doc__)
    parser.add_argument("reference", type=Path, help="checkpoint (.pth) saved by the reference ACMIL code")
    parser.add_argument("--out", type=Path, required=True, help="where to write the converted checkpoint")
    parser.add_argument("--classes", help="comma-separated class names in index order (default class_0, ...)")
    parser.add_argument("--top-k", type=int, default=10, help="masking candidates (training only)")
    parser.add_argument("--mask-ratio", type=float, default=0.6, help="masked fraction (training only)")
    parser.add_argument("--encoder", help="timm name of the encoder that made the features (recorded)")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.classes.split(",")] if args.classes else None
    encoder = {"encoder": args.encoder} if args.encoder else None
    out = import_reference(args.reference, args.out, names, args.top_k, args.mask_ratio, encoder)
    print(f"wrote {out}")
    return 0
