"""Fine-tune a pretrained encoder on `text_splits` with Lightning, resumable from checkpoints."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import polars as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from assets.model.training.base_model import resolve_base_model
from assets.model.training.config import FineTuneConfig
from assets.model.training.data import SplitsDataModule
from assets.model.training.module import FineTuneModule
from assets.model.training.placement import Placement, placement
from textops_core.modeling import use_mean_pooling

Log = Callable[[str], None]
BEST_WEIGHTS = "best.safetensors"
BEST_INFO = "best.json"


@dataclass
class TrainingOutcome:
    model_dir: Path  # complete exported model: safetensors, tokenizer, config
    best_epoch: int
    best_step: int
    best_val_macro_f1: float
    global_step: int
    resumed_from_step: int | None
    wall_time_s: float
    train_samples_per_s: float
    device: str
    precision: str
    world_size: int = 1  # training processes, all nodes together
    num_nodes: int = 1
    launcher: str = "in_process"
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in self.__dict__.items()
            if k != "history"
        }


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    on_gpu = accelerator in {"auto", "gpu", "cuda"} and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def balanced_class_weights(labels: list[int], num_labels: int) -> list[float]:
    """n / (K * count_k): each class weighs the same in the loss as a whole."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_labels).float().clamp(min=1)
    return (counts.sum() / (num_labels * counts)).tolist()


def build_module(config: FineTuneConfig, label_names: list[str], train_labels: list[int]):
    """The base encoder with a new classification head, wrapped in the LightningModule, and
    its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    base = resolve_base_model(config.base_model)
    backbone = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    if config.pooling == "mean":
        use_mean_pooling(backbone)
    backbone.train()  # transformers 5 loads in eval mode: dropout would be off
    balanced = config.class_weights == "balanced"
    module = FineTuneModule(
        backbone,
        len(label_names),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        class_weights=balanced_class_weights(train_labels, len(label_names)) if balanced else None,
        label_smoothing=config.label_smoothing,
        head_learning_rate_scale=config.head_learning_rate_scale,
        layer_decay=config.layer_decay,
    )
    return module, AutoTokenizer.from_pretrained(base)


def training_callbacks(
    config: FineTuneConfig, checkpoint_dir: Path, best: Callback, progress: Callback
) -> list[Callback]:
    """Resumable checkpoints every checkpoint_every_n_steps, the best weights, the progress
    log, and early stopping when it is on."""
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="last",
            save_top_k=0,
            save_last=True,
            every_n_train_steps=config.checkpoint_every_n_steps,
            enable_version_counter=False,
        ),
        best,
        progress,
    ]
    if config.early_stopping_patience:
        callbacks.append(
            EarlyStopping(
                monitor="val/macro_f1",
                mode="max",
                patience=config.early_stopping_patience,
                check_on_train_epoch_end=False,
            )
        )
    return callbacks


def export_best(module, tokenizer, best: BestWeights, export_dir: Path) -> dict[str, Any]:
    """The best weights, with the tokenizer, saved as a transformers model in `export_dir`;
    returns when they were reached (epoch, step, validation macro F1)."""
    from safetensors.torch import load_file

    if not best.path.is_file():
        raise RuntimeError("training ended before any validation: no best weights to export")
    module.load_state_dict(load_file(best.path))
    export_dir.mkdir(parents=True, exist_ok=True)
    module.backbone.save_pretrained(export_dir)
    tokenizer.save_pretrained(export_dir)
    return json.loads((best.path.parent / BEST_INFO).read_text())


def fine_tune(
    config: FineTuneConfig,
    split_paths: dict[str, Path],
    label_names: list[str],
    checkpoint_dir: Path,
    export_dir: Path,
    log: Log,
    logger: Any = False,
    callbacks: list[Callback] | None = None,
    place: Placement | None = None,
) -> TrainingOutcome | None:
    """Train, resuming from `checkpoint_dir/last.ckpt` when a previous attempt left one, and
    export the best weights by validation macro F1 to `export_dir`.

    `place` is the checked placement (`training_placement`); under torchrun every rank calls
    this, and only rank 0 writes checkpoints, best weights and the export and returns the
    outcome (the other ranks return None)."""
    place = place or training_placement(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_labels = pl.read_parquet(split_paths["train"], columns=["label"])["label"].to_list()
    module, tokenizer = build_module(config, label_names, train_labels)
    data = SplitsDataModule(
        split_paths,
        tokenizer,
        config.max_length,
        config.batch_size,
        config.seed,
        num_workers=config.num_workers,
    )
    resume = resume_point(checkpoint_dir, log)
    best = BestWeights(checkpoint_dir)
    progress = ProgressLog(log, len(train_labels), config.progress_every_s)
    precision = resolve_precision(config.precision, config.accelerator)
    trainer = L.Trainer(
        **trainer_settings(config, precision, place),
        callbacks=[*training_callbacks(config, checkpoint_dir, best, progress), *(callbacks or [])],
        logger=logger,
        default_root_dir=str(checkpoint_dir),
    )
    started = time.monotonic()
    trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None)
    wall = time.monotonic() - started
    if trainer.global_rank != 0:
        return None
    reached = export_best(module, tokenizer, best, export_dir)
    return TrainingOutcome(
        model_dir=export_dir,
        best_epoch=reached["epoch"],
        best_step=reached["step"],
        best_val_macro_f1=reached["val_macro_f1"],
        resumed_from_step=progress.start_step if resume else None,
        wall_time_s=round(wall, 2),
        train_samples_per_s=round(progress.samples_per_s, 2),
        precision=precision,
        launcher=place.launcher,
        history=progress.history,
        **_trained_on(trainer),
    )


def resume_point(checkpoint_dir: Path, log: Log) -> Path | None:
    """`last.ckpt` a previous attempt left in `checkpoint_dir`, if any (the folder is made)."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / "last.ckpt"
    if not last.is_file():
        return None
    log(f"resuming from {last}")
    return last


def _trained_on(trainer: L.Trainer) -> dict[str, Any]:
    return {
        "global_step": trainer.global_step,
        "device": _device_name(trainer),
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
    }


def training_placement(config: FineTuneConfig, max_nodes: int | None = 1) -> Placement:
    """The config's placement, checked (PlacementError says what to set instead)."""
    return placement(
        config.launcher,
        config.accelerator,
        config.devices,
        config.strategy,
        config.num_nodes,
        max_nodes,
    )


def trainer_settings(
    config: FineTuneConfig, precision: str, place: Placement | None = None
) -> dict[str, Any]:
    """The Lightning Trainer arguments a config sets: placement (one device in the step's
    process; under torchrun, DDP over torchrun's processes), precision and the length of
    training. The batch samplers shard themselves per rank, so Lightning adds no sampler."""
    place = place or training_placement(config, max_nodes=None)
    in_process = place.launcher == "in_process"
    # under torchrun, Lightning checks devices against torchrun's processes per node
    devices = _devices(config.devices) if in_process else place.nproc_per_node
    return {
        "accelerator": config.accelerator,
        "devices": 1 if in_process and devices == "auto" else devices,
        "strategy": config.strategy if in_process else place.strategy,
        "num_nodes": place.num_nodes,
        "use_distributed_sampler": False,
        "precision": precision,
        "max_epochs": config.max_epochs,
        "max_steps": config.max_steps,
        "limit_train_batches": _limit_train_batches(config),
        "val_check_interval": 1.0 / config.val_checks_per_epoch,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
    }


def _limit_train_batches(config: FineTuneConfig) -> int | float:
    """Batches per epoch. A `max_steps` shorter than an epoch shortens the epoch, so the run
    still ends with a validation and has best weights to export."""
    limit = config.limit_train_batches
    if limit > 1:
        return int(limit)
    if config.max_steps > 0 and limit == 1.0:
        return config.max_steps  # Lightning caps a count at the epoch's length
    return limit


def _devices(devices: str) -> int | str | list[int]:
    if devices.isdigit() or devices == "-1":
        return int(devices)
    if "," in devices:
        return [int(d) for d in devices.split(",") if d.strip()]
    return devices


def _device_name(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{trainer.world_size}"
    threads = f"{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    if trainer.world_size > 1:
        return f"cpu x{trainer.world_size} processes ({threads} each)"
    return f"cpu ({threads})"


class BestWeights(Callback):
    """Keeps the best weights by validation macro F1 as safetensors (no pickle), written
    atomically; its best score travels in Lightning's checkpoint so a resume keeps it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / BEST_WEIGHTS
        self.best_score = float("-inf")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        score = float(trainer.callback_metrics.get("val/macro_f1", float("nan")))
        if not score > self.best_score:
            return
        from safetensors.torch import save_file

        self.best_score = score
        state = {k: v.detach().cpu().contiguous() for k, v in pl_module.state_dict().items()}
        tmp = self.path.with_suffix(".tmp")
        save_file(state, tmp)
        os.replace(tmp, self.path)
        info = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "val_macro_f1": round(score, 6),
        }
        (self.directory / BEST_INFO).write_text(json.dumps(info))

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict["best_score"]


class ProgressLog(Callback):
    """Step, samples/s and ETA into the run's log every `every_s` seconds; keeps the curves."""

    def __init__(self, log: Log, train_size: int, every_s: float = 30.0) -> None:
        self.emit = log
        self.train_size = train_size
        self.every_s = every_s
        self.history: list[dict[str, float]] = []
        self.samples = 0
        self.train_time = 0.0
        self._last_log = 0.0
        self._batch_start = 0.0
        self.start_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step  # > 0 after a resume
        self._last_log = time.monotonic()

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_time if self.train_time else 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        self.train_time += now - self._batch_start
        # every rank takes a share of the same global batch: count the whole batch
        self.samples += int(batch["labels"].shape[0]) * trainer.world_size
        loss_tensor = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        loss = float(loss_tensor)
        step = trainer.global_step
        if step % 10 == 0:
            # the loss over the whole global batch: every rank reaches this step, so the mean
            # across ranks is a collective they all join (one process: the loss itself)
            loss = float(trainer.strategy.reduce(loss_tensor, reduce_op="mean"))
            self.history.append({"step": step, "train/loss": loss})
        if now - self._last_log >= self.every_s:
            self._last_log = now
            total = trainer.estimated_stepping_batches
            rate = self.samples_per_s
            sampler = trainer.train_dataloader.batch_sampler
            remaining = (total - step) * sampler.batch_size * sampler.world_size
            eta = remaining / rate if rate else float("nan")
            self.emit(
                f"epoch {trainer.current_epoch} step {step}/{total} loss {loss:.4f} "
                f"{rate:.1f} samples/s ETA {eta / 60:.1f} min"
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.history.append({"step": trainer.global_step, **metrics})
        self.emit(
            f"epoch {trainer.current_epoch} step {trainer.global_step} "
            + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        )
