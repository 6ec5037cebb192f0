"""Training throughput: textops' Lightning step vs Hugging Face Trainer, side by side in one run.

Same model, tweets, max_length, batch size and hardware for all three:
  textops          LengthGroupedBatchSampler + dynamic padding + one lean step
  trainer-default  transformers.Trainer, random sampling, padding per batch by its collator
  trainer-grouped  transformers.Trainer with train_sampling_strategy="group_by_length"

Each runs one epoch over the same tweets; samples/s is measured from the end of the
`--warmup` th step to the end of the last (so model loading and first-step costs are out).
With --gpu-peak-tflops, model FLOPs utilisation is reported too:
6 * non-embedding parameters * tokens + attention (12 * layers * hidden * seq^2 per sequence).

    python benchmarks/train_throughput.py --rows 2048 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from assets.data.sources.transports import read_source
from assets.data.splits import TextSplitsConfig, build_splits
from assets.model.training.base_model import resolve_base_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval" / "hate"


def load_tweets(rows: int) -> pl.DataFrame:
    if not DATA.is_dir():
        raise SystemExit(f"benchmark data not found at {DATA} (../shared is absent)")
    source = read_source(str(DATA), Path(tempfile.mkdtemp()), lambda message: None)
    train = build_splits(source.frame, TextSplitsConfig()).splits["train"]
    return train.head(rows)


class StepClock:
    """Timestamps of step ends and the samples/tokens seen by then."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self.samples: list[int] = []
        self.tokens: list[int] = []
        self.attention: list[int] = []

    def record(self, batch_size: int, tokens: int, attention: int) -> None:
        self.times.append(time.perf_counter())
        self.samples.append(batch_size)
        self.tokens.append(tokens)
        self.attention.append(attention)

    def rate(self) -> dict[str, float]:
        start, end = self.warmup - 1, len(self.times) - 1
        elapsed = self.times[end] - self.times[start]
        samples = sum(self.samples[start + 1 :])
        return {
            "samples_per_s": samples / elapsed,
            "tokens_per_s": sum(self.tokens[start + 1 :]) / elapsed,
            "attention_per_s": sum(self.attention[start + 1 :]) / elapsed,
            "steps_timed": end - start,
            "seconds": elapsed,
        }


def _batch_shape(mask: torch.Tensor) -> tuple[int, int, int]:
    rows, width = mask.shape
    return rows, rows * width, rows * width * width  # padded tokens are computed too


def run_textops(frame: pl.DataFrame, base: Path, args) -> dict[str, float]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from assets.model.training.data import SplitsDataModule
    from assets.model.training.module import FineTuneModule

    clock = StepClock(args.warmup)

    class Clock(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch["input_ids"].is_cuda:
                torch.cuda.synchronize()
            clock.record(*_batch_shape(batch["attention_mask"]))

    folder = Path(tempfile.mkdtemp())
    frame.write_parquet(folder / "train.parquet")
    frame.head(args.batch_size).write_parquet(folder / "validation.parquet")
    L.seed_everything(0, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(base)
    backbone = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    backbone.train()
    module = FineTuneModule(backbone, 2)
    data = SplitsDataModule(
        {"train": folder / "train.parquet", "validation": folder / "validation.parquet"},
        tokenizer,
        args.max_length,
        args.batch_size,
        seed=0,
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[Clock()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        precision=args.precision,
        accelerator=args.accelerator,
        devices=1,
    )
    trainer.fit(module, datamodule=data)
    return clock.rate()


def run_trainer(frame: pl.DataFrame, base: Path, args, strategy: str) -> dict[str, float]:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    clock = StepClock(args.warmup)
    tokenizer = AutoTokenizer.from_pretrained(base)
    encoded = tokenizer(frame["text"].to_list(), truncation=True, max_length=args.max_length)
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, label in zip(
            encoded["input_ids"], encoded["attention_mask"], frame["label"], strict=True
        )
    ]
    collator = DataCollatorWithPadding(tokenizer)
    shapes: list[tuple[int, int, int]] = []

    def collate(features):
        batch = collator(features)
        shapes.append(_batch_shape(batch["attention_mask"]))
        return batch

    class Clock(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            if torch.cuda.is_available() and args.accelerator != "cpu":
                torch.cuda.synchronize()
            clock.record(*shapes[len(clock.times)])

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        train_sampling_strategy=strategy,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        bf16=args.precision.startswith("bf16"),
        use_cpu=args.accelerator == "cpu",
    )
    Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collate,
        callbacks=[Clock()],
    ).train()
    return clock.rate()


def model_flops_utilisation(rate: dict[str, float], base: Path, peak_tflops: float) -> float:
    config = json.loads((base / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    intermediate = config["intermediate_size"]
    non_embedding = layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    flops_per_s = 6 * non_embedding * rate["tokens_per_s"]
    flops_per_s += 12 * layers * hidden * rate["attention_per_s"]  # QK^T and AV, fwd + bwd
    return flops_per_s / (peak_tflops * 1e12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the timing")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument(
        "--gpu-peak-tflops",
        type=float,
        default=0.0,
        help="peak dense TFLOP/s of the device for MFU (H200 bf16: 790)",
    )
    parser.add_argument(
        "--only", choices=["textops", "trainer-default", "trainer-grouped"], action="append"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = resolve_base_model("sentence-transformers/all-MiniLM-L6-v2")
    frame = load_tweets(args.rows)
    runs = {
        "textops": lambda: run_textops(frame, base, args),
        "trainer-default": lambda: run_trainer(frame, base, args, "random"),
        "trainer-grouped": lambda: run_trainer(frame, base, args, "group_by_length"),
    }
    results = {}
    for name, run in runs.items():
        if args.only and name not in args.only:
            continue
        results[name] = run()
        line = f"{name:16s} {results[name]['samples_per_s']:8.1f} samples/s"
        if args.gpu_peak_tflops:
            mfu = model_flops_utilisation(results[name], base, args.gpu_peak_tflops)
            results[name]["mfu"] = mfu
            line += f"   MFU {mfu:.1%}"
        print(line, flush=True)
    if "textops" in results:
        for other in ("trainer-default", "trainer-grouped"):
            if other in results:
                ratio = results["textops"]["samples_per_s"] / results[other]["samples_per_s"]
                results[f"ratio_vs_{other}"] = ratio
                print(f"textops / {other}: {ratio:.2f}x")
    print(
        f"rows={len(frame)} batch={args.batch_size} max_length={args.max_length} "
        f"device={args.accelerator} precision={args.precision} threads={torch.get_num_threads()}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
