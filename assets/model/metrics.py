"""Classification metrics on label arrays: official metrics, bootstrap intervals, calibration."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

METRICS = ("macro_f1", "macro_recall")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> np.ndarray:
    """counts[true, predicted]."""
    codes = np.asarray(y_true) * num_labels + np.asarray(y_pred)
    return np.bincount(codes, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def per_class(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    true_positive = np.diagonal(counts, axis1=-2, axis2=-1).astype(float)
    predicted = counts.sum(axis=-2)
    support = counts.sum(axis=-1)
    precision = np.divide(
        true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0
    )
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(true_positive), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def metric_from_counts(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == "macro_f1":
        return lambda counts: per_class(counts)["f1"].mean(axis=-1)
    if name == "macro_recall":
        return lambda counts: per_class(counts)["recall"].mean(axis=-1)
    raise ValueError(f"unknown metric {name!r}; use one of {', '.join(METRICS)}")


def score(name: str, y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    return float(metric_from_counts(name)(confusion(y_true, y_pred, num_labels)))


def _resampled(
    name: str, y_true: np.ndarray, y_pred: np.ndarray, num_labels: int, index: np.ndarray
) -> np.ndarray:
    """The metric on each row of `index` (resampled example positions), vectorized."""
    resamples = index.shape[0]
    codes = y_true[index] * num_labels + y_pred[index]
    codes += np.arange(resamples)[:, None] * num_labels * num_labels
    counts = np.bincount(codes.ravel(), minlength=resamples * num_labels * num_labels)
    return metric_from_counts(name)(counts.reshape(resamples, num_labels, num_labels))


def bootstrap_interval(
    name: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_labels: int,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric over test examples resampled with replacement."""
    y_true = np.asarray(y_true)
    index = _resample_index(len(y_true), resamples, seed)
    return _percentile_interval(
        _resampled(name, y_true, np.asarray(y_pred), num_labels, index), level
    )


def _resample_index(rows: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, rows, size=(resamples, rows))


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(
    name: str,
    y_true: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    num_labels: int,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """The metric's difference challenger - champion on the same test examples, and its
    percentile interval from bootstrap resamples shared by both models: what varies between
    them is the models, not the sample."""
    y_true = np.asarray(y_true)
    index = _resample_index(len(y_true), resamples, seed)
    differences = _resampled(name, y_true, np.asarray(challenger), num_labels, index)
    differences -= _resampled(name, y_true, np.asarray(champion), num_labels, index)
    delta = score(name, y_true, np.asarray(challenger), num_labels) - score(
        name, y_true, np.asarray(champion), num_labels
    )
    return (float(delta), *_percentile_interval(differences, level))


def expected_calibration_error(
    probabilities: np.ndarray, y_true: np.ndarray, bins: int = 15
) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)
