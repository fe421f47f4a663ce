"""The LightningModule: optimisation of a pure ``acmil.models`` model, and nothing else."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric

from acmil.checkpoint import CARD_KEY, ModelCard
from acmil.models import MILOutput, create_model

from .metrics import make_metrics

SELECTION_METRIC = "val/selection"  # validation macro-F1 + macro-AUC: what model selection maximises
TIE_BREAK_SCALE = 1e-4
STAGES = ("train", "val")  # evaluation goes through acmil.training.metrics.predict_dataset, not Lightning's test loop


def selection_score(f1_macro: torch.Tensor, auc: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """Macro-F1 + macro-AUC, ties broken towards the lower validation loss.

    With few validation slides F1 and AUC saturate within an epoch or two, and ModelCheckpoint keeps the
    first of equal scores: an almost untrained model. The loss term lies in (0, 1e-4], so it only orders
    epochs whose F1 + AUC differ by less than 1e-4.
    """
    return f1_macro + auc + TIE_BREAK_SCALE * (1.0 - torch.tanh(loss.float()))


class _EpochOutputs:
    """What an epoch's steps hand to its end: detached loss terms, probabilities (B, C), targets (B,), bags."""

    def __init__(self) -> None:
        self.terms: dict[str, list[torch.Tensor]] = {}
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def add(self, terms: dict[str, torch.Tensor], probs: torch.Tensor, targets: torch.Tensor) -> None:
        for name, value in terms.items():
            self.terms.setdefault(name, []).append(value.detach().float())
        self.probs.append(probs)
        self.targets.append(targets)
        self.sizes.append(targets.shape[0])


class MILModule(L.LightningModule):
    """Trains a registered MIL model (``acmil.models.MODELS``) on bags of patch features.

    Args:
        arch: model name in the registry (acmil, abmil, mean, max).
        arch_args: keyword arguments of the model (n_branches, top_k, mask_ratio, attn_dim, dropout, ...).
        hidden_dim: width H of the reduced instance features; default ``in_dim // 2``. Its own argument (not
            in ``arch_args``) so a feature-type config can set it on top of a model config (the paper uses
            256 for ResNet-18 512-d features and 128 for ViT-S 384-d ones).
        in_dim: feature width D (linked from the data module).
        class_names: label map in index order (linked from the data module).
        encoder: provenance of the training features (linked from the data module; stored in checkpoints).
        training_cohort: slides, classes and encoder trained on (linked from the data module; in the card).
        branch_weight: weight of the mean branch cross-entropy (ACMIL).
        slide_weight: weight of the slide cross-entropy.
        diversity_weight: weight of the attention diversity term (ACMIL).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        scheduler: "cosine" decays the learning rate to 0 per step over the whole run, no warm-up.
    """

    def __init__(
        self,
        arch: str = "acmil",
        arch_args: dict[str, Any] | None = None,
        hidden_dim: int | None = None,
        in_dim: int | None = None,
        class_names: list[str] | None = None,
        encoder: dict[str, Any] | None = None,
        training_cohort: dict[str, Any] | None = None,
        branch_weight: float = 1.0,
        slide_weight: float = 1.0,
        diversity_weight: float = 1.0,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        scheduler: Literal["cosine", "none"] = "cosine",
    ) -> None:
        super().__init__()
        if not in_dim or not class_names:
            raise ValueError("MILModule needs in_dim and class_names (linked from the data module)")
        self.save_hyperparameters()
        self.arch, self.arch_args = arch, dict(arch_args or {})
        if hidden_dim is not None:
            if self.arch_args.get("hidden_dim", hidden_dim) != hidden_dim:
                other = self.arch_args["hidden_dim"]
                raise ValueError(f"hidden_dim={hidden_dim} conflicts with arch_args.hidden_dim={other}")
            self.arch_args["hidden_dim"] = hidden_dim
        self.class_names, self.encoder = list(class_names), dict(encoder or {})
        self.training_cohort = training_cohort
        self.model = create_model(arch, in_dim=in_dim, n_classes=len(self.class_names), **self.arch_args)
        self.loss_weights = {
            "branch_weight": branch_weight,
            "slide_weight": slide_weight,
            "diversity_weight": diversity_weight,
        }
        n = len(self.class_names)
        # (ModuleDict keys cannot be "train": nn.Module.train exists, hence the suffix)
        # validate_args=False: the inputs are well-formed by construction, and the checks would synchronise
        # the GPU on every step.
        self.metrics = torch.nn.ModuleDict({f"{s}_": make_metrics(n, f"{s}/", validate_args=False) for s in STAGES})
        # Epoch means of the loss terms, weighted by bags across DDP processes; one MeanMetric per (stage, term),
        # made on the first step (the terms depend on the model). Their states are not saved in checkpoints.
        self.loss_means = torch.nn.ModuleDict()
        self._epoch: dict[str, _EpochOutputs] = {}

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """x: (B, N, D), mask: (B, N) bool or None -> MILOutput (logits (B, C), attention (B, M, N))."""
        return self.model(x, mask)

    def transfer_batch_to_device(self, batch: dict[str, Any], device: torch.device, dataloader_idx: int) -> dict:
        """The batch dict of :func:`acmil.training.data.collate_bags` moved key by key (Lightning's generic
        version walks any collection, which costs more than a small model's whole step)."""
        return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _common_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        target = batch["label"]  # (B,)
        out = self.model(batch["features"], batch["mask"])
        terms = self.model.compute_loss(out, target, **self.loss_weights)
        # Per step only detached tensors are kept; metrics and loss means are updated once per epoch
        # (torchmetrics' update and self.log each cost more than a whole step of a small model).
        outputs = self._epoch.setdefault(stage, _EpochOutputs())
        outputs.add(terms, torch.softmax(out.logits.detach().float(), dim=-1), target)
        if stage == "train" and self.trainer._logger_connector.should_update_logs:
            # Only on the steps the loggers write (every log_every_n_steps): the same rows, without the cost
            # of self.log on the others.
            n = target.shape[0]
            self.log(
                "train/loss_step", terms["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n
            )
        return terms["loss"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "val")

    def _loss_mean(self, stage: str, term: str) -> MeanMetric:
        key = f"{stage}_{term}"
        if key not in self.loss_means:
            self.loss_means[key] = MeanMetric().to(self.device)
        return self.loss_means[key]

    def _log_epoch_metrics(self, stage: str) -> None:
        # compute() gathers the states of every process under DDP, so each rank holds the same global values
        # (sync_dist then averages identical numbers: harmless, and it tells Lightning they are global).
        outputs = self._epoch.pop(stage, None)
        metrics = self.metrics[f"{stage}_"]
        losses = {}
        if outputs is not None:
            metrics.update(torch.cat(outputs.probs), torch.cat(outputs.targets))
            sizes = torch.tensor(outputs.sizes, dtype=torch.float32, device=self.device)
            for name, values in outputs.terms.items():
                self._loss_mean(stage, name).update(torch.stack(values), weight=sizes)
        for key, mean in self.loss_means.items():
            if key.startswith(f"{stage}_"):
                losses[f"{stage}/{key[len(stage) + 1 :]}"] = mean.compute()
                mean.reset()
        values = metrics.compute()
        self.log_dict(losses, sync_dist=True)
        self.log_dict(values, prog_bar=stage == "val", sync_dist=True)
        if stage == "val":
            score = selection_score(values["val/f1_macro"], values["val/auc"], losses["val/loss"])
            self.log(SELECTION_METRIC, score, prog_bar=True, sync_dist=True)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            rank_zero_warn("cosine schedule needs max_epochs or max_steps; keeping the learning rate constant")
            return {"optimizer": optimizer}
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(steps)), eta_min=0.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def card(self) -> ModelCard:
        """What :func:`acmil.checkpoint.load_model` needs to rebuild the model without Lightning."""
        return ModelCard(
            arch=self.arch,
            arch_args=self.arch_args,
            in_dim=int(self.hparams.in_dim),
            class_names=self.class_names,
            encoder=self.encoder,
            extra={
                "epoch": int(self.current_epoch),
                "global_step": int(self.global_step),
                **self.loss_weights,
                "training_cohort": self.training_cohort,
            },
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CARD_KEY] = asdict(self.card())
