"""Batched inference on length-sorted batches, for evaluation and approval."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from assets.training.data import collate, length_sorted_batches


@dataclass
class Predictions:
    probabilities: np.ndarray  # (n, num_labels)
    seconds: float

    @property
    def labels(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def load_classifier(model_dir: Path):
    """Model (eval mode) and tokenizer saved by `fine_tune`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


@torch.inference_mode()
def predict_proba(
    model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64
) -> Predictions:
    """Class probabilities in the order of `texts`; batches sorted by length, padded per batch."""
    started = time.perf_counter()
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    device = next(model.parameters()).device
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    for batch in length_sorted_batches([len(x) for x in ids], batch_size):
        tensors = collate([(ids[i], 0) for i in batch], pad)
        logits = model(
            input_ids=tensors["input_ids"].to(device),
            attention_mask=tensors["attention_mask"].to(device),
        ).logits
        out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return Predictions(out, time.perf_counter() - started)
