"""The LightningModule: loss, one shared step, per-stage metrics, AdamW with warmup/decay."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class TextClassifier(L.LightningModule):
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
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        parameters = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [
            {
                "params": [p for n, p in parameters if not n.endswith(no_decay)],
                "weight_decay": self.hparams.weight_decay,
            },
            {"params": [p for n, p in parameters if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        # fused: one kernel for the whole update instead of a loop over tensors
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.learning_rate, fused=True)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = int(total * self.hparams.warmup_ratio)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(total - warmup, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
