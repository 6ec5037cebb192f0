"""The LightningModule: loss, one shared step, per-stage metrics, AdamW with transformers' linear
warmup and decay."""

from __future__ import annotations

import re

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import get_linear_schedule_with_warmup


class FineTuneModule(L.LightningModule):
    """Wraps an injected `AutoModelForSequenceClassification`; owns loss, metrics, optimizer."""

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        head_learning_rate_scale: float = 1.0,
        layer_decay: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        weight = torch.tensor(class_weights, dtype=torch.float) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.val_f1 = MulticlassF1Score(num_classes=num_labels, average="macro")
        self.val_accuracy = MulticlassAccuracy(num_classes=num_labels, average="micro")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        return self.loss(logits.float(), batch["labels"]), logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch)
        predictions = logits.argmax(dim=-1)
        self.val_f1.update(predictions, batch["labels"])
        self.val_accuracy.update(predictions, batch["labels"])
        size = batch["labels"].shape[0]
        self.log("val/loss", loss, batch_size=size)
        self.log("val/macro_f1", self.val_f1, prog_bar=True, batch_size=size)
        self.log("val/accuracy", self.val_accuracy, batch_size=size)

    def configure_optimizers(self):
        groups = parameter_groups(
            [(n, p) for n, p in self.named_parameters() if p.requires_grad],
            self.hparams.learning_rate,
            self.hparams.weight_decay,
            self.hparams.head_learning_rate_scale,
            self.hparams.layer_decay,
        )
        # fused: one kernel for the whole update instead of a loop over tensors
        optimizer = torch.optim.AdamW(groups, fused=True)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(total * self.hparams.warmup_ratio), total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
LAYER = re.compile(r"\.layers?\.(\d+)\.")


def parameter_groups(
    named: list[tuple[str, nn.Parameter]],
    learning_rate: float,
    weight_decay: float,
    head_scale: float = 1.0,
    layer_decay: float = 1.0,
) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms; the new head (anything outside the
    pretrained encoder's embeddings and layers) at `head_scale` times the learning rate; encoder
    layer i of n at `layer_decay ** (n - i)` times it, the embeddings one step lower still."""
    depth = 1 + max((int(m.group(1)) for n, _ in named if (m := LAYER.search(n))), default=-1)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in named:
        if (match := LAYER.search(name)) is not None:
            scale = layer_decay ** (depth - int(match.group(1)))
        elif ".embeddings." in name:
            scale = layer_decay ** (depth + 1)
        else:
            scale = head_scale
        decay = 0.0 if name.endswith(NO_DECAY) else weight_decay
        groups.setdefault((learning_rate * scale, decay), []).append(parameter)
    return [
        {"params": params, "lr": lr, "weight_decay": decay}
        for (lr, decay), params in sorted(groups.items())
    ]
