"""``acmil import-checkpoint``: turn a checkpoint of the public ACMIL code (``ACMIL_GA`` or ``ACMIL_MHA``) into ours.

The reference's training script saves ``{'model': state_dict, 'optimizer': ..., 'epoch': int, 'config':
Struct}`` where ``config`` is a pickled ``utils.utils.Struct``. The file is read with a restricted
unpickler (:mod:`acmil.restricted_unpickle`): nothing it names is imported or run, so neither the reference
code nor wandb is needed and a crafted file cannot execute code. The architecture is recognised from the
weights; masking (``n_masked_patch``, ``mask_drop``), the branch count (``n_token``) and the class count
(``n_class``) come from the saved config when it is there, and the saved epoch goes into the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acmil.command import CommandParser, command_parser, config_from

if TYPE_CHECKING:
    from acmil.checkpoint import ModelCard

DEFAULT_TOP_K, DEFAULT_MASK_RATIO = 10, 0.6  # the paper's recipe, for files saved without a config
_STATE_KEYS = ("model", "state_dict", "model_state_dict")


def _extract_state_dict(obj: Any, path: Path) -> dict:
    """The reference saves ``{'model': state_dict, 'optimizer': ..., ...}``; plain state dicts also occur."""
    if isinstance(obj, dict):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), dict):
                return obj[key]
        if any(str(k).endswith("dimreduction.fc1.weight") for k in obj):
            return obj
    raise ValueError(
        f"{path}: no ACMIL_GA or ACMIL_MHA state dict found (expected keys such as 'dimreduction.fc1.weight')"
    )


def _scalar_config(config: Any) -> dict[str, Any]:
    """The saved config's plain fields (numbers, strings, booleans, None, short lists of them)."""
    from acmil.restricted_unpickle import plain

    data = plain(config)
    if not isinstance(data, dict):
        return {}
    ok = (str, int, float, bool, type(None))
    return {
        str(k): (list(v) if isinstance(v, tuple) else v)
        for k, v in data.items()
        if not str(k).startswith("__")
        and (isinstance(v, ok) or (isinstance(v, (list, tuple)) and len(v) <= 64 and all(isinstance(x, ok) for x in v)))
    }


def read_reference(path: str | Path) -> tuple[dict, dict[str, Any], int | None]:
    """(state dict, saved config as plain data, saved epoch) of a reference checkpoint, running nothing in it."""
    import torch

    from acmil.restricted_unpickle import torch_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference checkpoint not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not a checkpoint (an empty file)")
    try:
        obj = torch_load(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: cannot read checkpoint ({reason})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a checkpoint (a {type(obj).__name__}, not a dict)")
    state = _extract_state_dict(obj, path)
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: the state dict holds non-tensors ({bad[:3]})")
    config = _scalar_config(obj.get("config")) if obj.get("config") is not None else {}
    epoch = obj.get("epoch")
    return state, config, epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def _pick(explicit: Any, config: dict[str, Any], key: str, default: Any) -> Any:
    """An explicit argument, else the saved config's value, else the default."""
    if explicit is not None:
        return explicit
    return config[key] if config.get(key) is not None else default


def import_reference(
    ref_path: str | Path,
    out_path: str | Path,
    class_names: list[str] | None = None,
    top_k: int | None = None,
    mask_ratio: float | None = None,
    encoder: dict[str, Any] | None = None,
) -> Path:
    """Convert a reference ``ACMIL_GA`` / ``ACMIL_MHA`` checkpoint into one this project trains on and serves.

    ``top_k`` / ``mask_ratio`` (training-time masking) default to the saved config's ``n_masked_patch`` /
    ``mask_drop``, else to 10 / 0.6.
    """
    from acmil.checkpoint import save_model

    return save_model(out_path, *convert_reference(ref_path, class_names, top_k, mask_ratio, encoder))


def convert_reference(
    ref_path: str | Path,
    class_names: list[str] | None = None,
    top_k: int | None = None,
    mask_ratio: float | None = None,
    encoder: dict[str, Any] | None = None,
) -> tuple[Any, ModelCard]:
    """The model (ACMIL or ACMILMHA) and model card of a reference checkpoint (see :func:`import_reference`)."""
    from acmil.checkpoint import ModelCard
    from acmil.models import ACMIL, ACMILMHA

    ref_path = Path(ref_path)
    state, config, epoch = read_reference(ref_path)
    top_k = int(_pick(top_k, config, "n_masked_patch", DEFAULT_TOP_K))
    mask_ratio = float(_pick(mask_ratio, config, "mask_drop", DEFAULT_MASK_RATIO))
    keys = {k.removeprefix("module.") for k in state}
    is_mha = "sub_attention.0.q_proj.weight" in keys
    try:
        if is_mha:
            model = ACMILMHA.from_reference_state_dict(state, top_k=top_k, mask_ratio=mask_ratio)
        else:
            model = ACMIL.from_reference_state_dict(state, top_k=top_k, mask_ratio=mask_ratio)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{ref_path}: {err}") from err
    for key, ours in (
        ("n_token", model.n_branches),
        ("n_class", model.n_classes),
        ("D_feat", model.in_dim),
        ("D_inner", model.hidden_dim),
    ):
        if isinstance(config.get(key), int) and config[key] != ours:
            raise ValueError(f"{ref_path}: the saved config says {key}={config[key]} but the weights have {ours}")
    names = class_names or [f"class_{i}" for i in range(model.n_classes)]
    if len(names) != model.n_classes:
        raise ValueError(f"{ref_path}: the model has {model.n_classes} classes but {len(names)} names were given")
    if encoder and encoder.get("feature_dim") not in (None, model.in_dim):
        raise ValueError(
            f"{ref_path}: the recipe's features are {encoder['feature_dim']}-d but the model takes {model.in_dim}-d"
        )
    args: dict[str, Any] = {
        "n_branches": model.n_branches,
        "top_k": top_k,
        "mask_ratio": mask_ratio,
        "hidden_dim": model.hidden_dim,
    }
    if is_mha:
        args.update(n_heads=model.n_heads)
    else:
        args.update(attn_dim=model.attention.attention_V[0].out_features)
    extra: dict[str, Any] = {"imported_from": ref_path.name, "reference_arch": "ACMIL_MHA" if is_mha else "ACMIL_GA"}
    if epoch is not None:
        extra["epoch"] = epoch
    if config:
        extra["reference_config"] = config
    card = ModelCard(
        arch="acmil_mha" if is_mha else "acmil",
        arch_args=args,
        in_dim=model.in_dim,
        class_names=list(names),
        encoder=encoder or {},
        extra=extra,
    )
    return model, card


@dataclass(kw_only=True)
class ImportCheckpointConfig:
    """``acmil import-checkpoint``'s options (a config file's keys are these names)."""

    reference: Path  # the .pth saved by the reference ACMIL code
    out: Path
    classes: str | None = None  # comma-separated class names in index order
    top_k: int | None = None
    mask_ratio: float | None = None
    encoder: str | None = None  # timm name of the encoder that made the features
    recipe_from: Path | None = None  # a feature file whose recipe goes into the card
    recipe: Path | None = None  # the recipe as a JSON file


@dataclass(kw_only=True)
class ImportCheckpointResult:
    """The checkpoint written and its model card (architecture, class names, masking, reference config)."""

    checkpoint: Path
    card: ModelCard

    @property
    def paths(self) -> list[Path]:
        return [self.checkpoint]


def run_import_checkpoint(config: ImportCheckpointConfig) -> ImportCheckpointResult:
    """Convert ``config.reference`` and write it to ``config.out``."""
    from acmil.checkpoint import save_model

    names = [c.strip() for c in config.classes.split(",")] if config.classes else None
    encoder = {"encoder": config.encoder} if config.encoder else None
    if config.recipe_from or config.recipe:
        from acmil.recipe import read_recipe_arg

        encoder = read_recipe_arg(config.recipe_from, config.recipe, config.encoder)
    model, card = convert_reference(
        config.reference, class_names=names, top_k=config.top_k, mask_ratio=config.mask_ratio, encoder=encoder
    )
    return ImportCheckpointResult(checkpoint=save_model(config.out, model, card), card=card)


def build_parser() -> CommandParser:
    parser = command_parser("acmil import-checkpoint", __doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="checkpoint (.pth) saved by the reference ACMIL code")
    parser.add_argument("--out", type=Path, required=True, help="where to write the converted checkpoint")
    parser.add_argument("--classes", help="comma-separated class names in index order (default class_0, ...)")
    parser.add_argument(
        "--top-k",
        type=int,
        help=f"masking candidates, training only (default: the saved config's n_masked_patch, else {DEFAULT_TOP_K})",
    )
    parser.add_argument(
        "--mask-ratio",
        type=float,
        help=f"masked fraction, training only (default: the saved config's mask_drop, else {DEFAULT_MASK_RATIO})",
    )
    parser.add_argument("--encoder", help="timm name of the encoder that made the features (recorded)")
    parser.add_argument(
        "--recipe-from",
        type=Path,
        metavar="H5",
        help="a feature file made like the training features: its recipe goes into the card",
    )
    parser.add_argument("--recipe", type=Path, metavar="JSON", help="the recipe as a JSON file (see acmil.recipe)")
    return parser


def main(argv: list[str] | None = None) -> int:
    result = run_import_checkpoint(config_from(build_parser().parse_args(argv), ImportCheckpointConfig))
    print(f"wrote {result.checkpoint}")
    return 0
