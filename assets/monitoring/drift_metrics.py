"""Drift between what the model was trained on and what it serves: pure functions on arrays."""

from __future__ import annotations

import numpy as np


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI over quantile bins of `expected` (0.1: some shift, 0.25: large shift)."""
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-6, None), np.clip(a, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(expected, actual)
    return float(result.statistic), float(result.pvalue)


def label_mix_test(predicted: np.ndarray, prior: np.ndarray) -> tuple[float, float]:
    """Chi-square of predicted label counts against the training label shares."""
    from scipy.stats import chisquare

    counts = np.bincount(np.asarray(predicted), minlength=len(prior)).astype(float)
    expected = np.asarray(prior, float) / np.sum(prior) * counts.sum()
    result = chisquare(counts, np.clip(expected, 1e-9, None))
    return float(result.statistic), float(result.pvalue)


def unknown_token_share(token_ids: list[list[int]], unknown_id: int | None) -> float:
    total = sum(len(ids) for ids in token_ids)
    if unknown_id is None or total == 0:
        return 0.0
    return sum(ids.count(unknown_id) for ids in token_ids) / total


def mean_embedding_cosine_distance(reference: np.ndarray, current: np.ndarray) -> float:
    a, b = reference.mean(axis=0), current.mean(axis=0)
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def mmd_rbf(reference: np.ndarray, current: np.ndarray) -> float:
    """Squared maximum mean discrepancy with an RBF kernel, bandwidth by the median heuristic."""
    joint = np.vstack([reference, current])
    squared = np.sum(joint**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * joint @ joint.T, 0)
    bandwidth = np.median(distances[distances > 0]) if np.any(distances > 0) else 1.0
    kernel = np.exp(-distances / bandwidth)
    n = len(reference)
    xx, yy, xy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return float(xx.mean() + yy.mean() - 2 * xy.mean())
