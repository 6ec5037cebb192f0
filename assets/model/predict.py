"""Batched prediction for training, evaluation, approval and export, through the service's own
inference loop (textops_core/inference.py), with progress lines and the wall time it took."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assets.progress import Log, Progress


@dataclass
class Predictions:
    logits: np.ndarray  # (n, num_labels)
    seconds: float
    temperature: float = 1.0  # the model's calibrated temperature

    @property
    def probabilities(self) -> np.ndarray:
        """Calibrated: what the service returns."""
        from textops_core.inference import softmax

        return softmax(self.logits, self.temperature)

    @property
    def raw_probabilities(self) -> np.ndarray:
        """At temperature 1, before calibration."""
        from textops_core.inference import softmax

        return softmax(self.logits)

    @property
    def labels(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


def load_classifier(
    model_dir: Path,
    max_length: int,
    variant: str = "pytorch",
    micro_batch: int = 64,
    temperature: float | None = None,
):
    """A `textops_core.inference.Predictor` of a saved model on one serving variant, at the model's
    calibrated temperature unless one is given."""
    from textops_core.inference import load_predictor

    return load_predictor(
        model_dir, max_length, variant, micro_batch=micro_batch, temperature=temperature
    )


def predict(
    predictor, texts: list[str], log: Log | None = None, what: str = "predicting"
) -> Predictions:
    """Logits in the order of `texts`, with the wall time they took; with `log`, progress lines
    (texts done, texts/s, ETA) every few seconds and a closing line."""
    progress = Progress(log, what, len(texts), "texts") if log else None
    started = time.perf_counter()
    logits = predictor.logits(texts, progress.update if progress else None)
    seconds = time.perf_counter() - started
    if progress:
        progress.finish()
    return Predictions(logits, seconds, predictor.temperature)
