"""Batched inference for evaluation and approval, through the service's own inference loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.progress import Log, Progress


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


def predict_proba(
    model,
    tokenizer,
    texts: list[str],
    max_length: int,
    batch_size: int = 64,
    log: Log | None = None,
    what: str = "predicting",
) -> Predictions:
    """Class probabilities in the order of `texts`, with the wall time they took; with `log`,
    progress lines (texts done, texts/s, ETA) every few seconds and a closing line."""
    from bento.inference import predict_proba as _predict_proba

    progress = Progress(log, what, len(texts), "texts") if log else None
    started = time.perf_counter()
    probabilities = _predict_proba(
        model, tokenizer, texts, max_length, batch_size, progress.update if progress else None
    )
    seconds = time.perf_counter() - started
    if progress:
        progress.finish()
    return Predictions(probabilities, seconds)
