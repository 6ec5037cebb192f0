"""Classification metrics on label arrays: official metrics, bootstrap intervals, calibration."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

METRICS = ("macro_f1", "macro_recall")
# what a user types: macro_f1, macro_recall, f1:<class> (one class's F1, e.g. TweetEval irony),
# mean_f1:<class>,<class> (the mean F1 of named classes, e.g. TweetEval stance)
METRIC_SYNTAX = re.compile(r"^(macro_f1|macro_recall|f1:[^,\s][^,]*|mean_f1:[^,]+(,[^,]+)+)$")
METRIC_HELP = (
    "macro_f1, macro_recall, f1:<class> (the F1 of one class) or mean_f1:<class>,<class>,... "
    "(the mean F1 of named classes)"
)


@dataclass(frozen=True)
class Metric:
    """An official metric resolved against a task's classes."""

    name: str  # as typed
    kind: str  # macro_f1, macro_recall, f1, mean_f1
    classes: tuple[int, ...] = ()

    def from_counts(self, counts: np.ndarray) -> np.ndarray:
        scores = per_class(counts)
        if self.kind == "macro_f1":
            return scores["f1"].mean(axis=-1)
        if self.kind == "macro_recall":
            return scores["recall"].mean(axis=-1)
        return scores["f1"][..., list(self.classes)].mean(axis=-1)


def check_metric_syntax(name: str) -> str:
    """`name` if it is a metric a task can resolve, else a ValueError saying what to type."""
    if not METRIC_SYNTAX.match(name.strip()):
        raise ValueError(f"metric {name!r} is not one of {METRIC_HELP}")
    return name.strip()


def parse_metric(name: str | Metric, label_names: list[str] | None = None) -> Metric:
    """The metric `name` on a task with classes `label_names` (needed for f1:/mean_f1:)."""
    if isinstance(name, Metric):
        return name
    name = check_metric_syntax(name)
    if name in METRICS:
        return Metric(name, name)
    kind, _, listed = name.partition(":")
    wanted = [part.strip() for part in listed.split(",")]
    if label_names is None:
        raise ValueError(f"metric {name!r} names classes: it needs the task's label names")
    unknown = [c for c in wanted if c not in label_names]
    if unknown:
        raise ValueError(
            f"metric {name!r}: {', '.join(repr(c) for c in unknown)} is not a class of this task "
            f"(classes: {', '.join(label_names)})"
        )
    return Metric(name, kind, tuple(label_names.index(c) for c in wanted))


def metric_label(name: str) -> str:
    """How a metric reads in a sentence: macro F1, macro recall, F1 of irony, mean F1 of ..."""
    if name == "macro_f1":
        return "macro F1"
    if name == "macro_recall":
        return "macro recall"
    kind, _, classes = name.partition(":")
    if kind == "f1":
        return f"F1 of {classes}"
    if kind == "mean_f1":
        return f"mean F1 of {classes.replace(',', ', ')}"
    return name.replace("_", " ")


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


def metric_from_counts(name: str | Metric) -> Callable[[np.ndarray], np.ndarray]:
    return parse_metric(name).from_counts


def score(name: str | Metric, y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> float:
    return float(metric_from_counts(name)(confusion(y_true, y_pred, num_labels)))


def _resampled(
    name: str | Metric, y_true: np.ndarray, y_pred: np.ndarray, num_labels: int, index: np.ndarray
) -> np.ndarray:
    """The metric on each row of `index` (resampled example positions), vectorized."""
    resamples = index.shape[0]
    codes = y_true[index] * num_labels + y_pred[index]
    codes += np.arange(resamples)[:, None] * num_labels * num_labels
    counts = np.bincount(codes.ravel(), minlength=resamples * num_labels * num_labels)
    return metric_from_counts(name)(counts.reshape(resamples, num_labels, num_labels))


def bootstrap_interval(
    name: str | Metric,
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
    name: str | Metric,
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
    them is the models, not the sample. Written here, not with scipy.stats.bootstrap, because
    one matrix of resample indices scores every resample of both models from confusion counts
    at once."""
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
    """Weighted mean gap between confidence and accuracy over `bins` equal-width confidence
    bins [low, high): torchmetrics' multiclass calibration error (L1)."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(
        multiclass_calibration_error(
            torch.as_tensor(probabilities, dtype=torch.float64),
            torch.tensor(np.asarray(y_true), dtype=torch.long),
            num_classes=probabilities.shape[1],
            n_bins=bins,
            norm="l1",
        )
    )
