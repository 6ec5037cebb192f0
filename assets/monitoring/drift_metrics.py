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


def _rbf_kernel(joint: np.ndarray) -> np.ndarray:
    """RBF kernel of every pair of rows, bandwidth by the median heuristic."""
    squared = np.sum(joint**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * joint @ joint.T, 0)
    bandwidth = np.median(distances[distances > 0]) if np.any(distances > 0) else 1.0
    return np.exp(-distances / bandwidth)


def _mmd(kernel: np.ndarray, first: np.ndarray) -> float:
    """Squared MMD between the rows where `first` is true and the others."""
    second = ~first
    return float(
        kernel[np.ix_(first, first)].mean()
        + kernel[np.ix_(second, second)].mean()
        - 2 * kernel[np.ix_(first, second)].mean()
    )


def mmd_rbf(reference: np.ndarray, current: np.ndarray) -> float:
    """Squared maximum mean discrepancy with an RBF kernel, bandwidth by the median heuristic."""
    first = np.arange(len(reference) + len(current)) < len(reference)
    return _mmd(_rbf_kernel(np.vstack([reference, current])), first)


def mmd_permutation_test(
    reference: np.ndarray, current: np.ndarray, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """Squared MMD and its permutation p-value: the share of random relabellings of the pooled
    rows (the observed one counted) whose MMD is at least the observed one."""
    kernel = _rbf_kernel(np.vstack([reference, current]))
    first = np.arange(len(kernel)) < len(reference)
    observed = _mmd(kernel, first)
    rng = np.random.default_rng(seed)
    exceed = sum(_mmd(kernel, rng.permutation(first)) >= observed for _ in range(permutations))
    return observed, float((exceed + 1) / (permutations + 1))


def holm_adjusted(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: a test is drift when its adjusted p-value is below the
    family's alpha, and a false alarm among all of them stays that rare. (scipy offers only
    false-discovery control, Benjamini-Hochberg; an alarm wants the family-wise rate.)"""
    ordered = sorted(p_values, key=p_values.get)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted
