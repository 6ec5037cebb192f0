"""Calibrated probabilities: one temperature, fitted on validation after training, divides the
logits everywhere the model's probabilities are read (evaluation, the service)."""

from __future__ import annotations

import numpy as np

from assets.model import metrics
from assets.plots import pyplot, to_png


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels at `temperature`."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    log_probabilities = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises validation NLL (searched on log T in [1/20, 20]); the
    labels argmax gives are unchanged, only the confidence moves."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(-np.log(20), np.log(20)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def calibration_summary(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """NLL and expected calibration error before (T = 1) and after scaling."""
    from textops_core.inference import softmax

    return {
        "temperature": temperature,
        "nll_before": nll(logits, labels),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": metrics.expected_calibration_error(softmax(logits), labels),
        "ece_after": metrics.expected_calibration_error(softmax(logits, temperature), labels),
    }


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> list[dict[str, float]]:
    """Per non-empty equal-width confidence bin [low, high), and [1, 1] for certain answers:
    its range, texts, mean confidence, accuracy. These are the bins whose weighted gaps
    metrics.expected_calibration_error sums (its library reports only the sum)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.append(np.linspace(0, 1, bins + 1), 1.0)
    which = np.searchsorted(edges[:-1], confidence, side="right") - 1
    return [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "texts": int((which == b).sum()),
            "confidence": float(confidence[which == b].mean()),
            "accuracy": float(correct[which == b].mean()),
        }
        for b in range(bins + 1)
        if (which == b).any()
    ]


def reliability_diagram(curves: dict[str, np.ndarray], labels: np.ndarray, bins: int = 15) -> bytes:
    """Accuracy against confidence per equal-width confidence bin, one line per set of
    probabilities (e.g. before and after temperature scaling), with the share of texts per bin."""
    plt = pyplot()
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 5.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    edges = np.linspace(0, 1, bins + 1)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    for name, probabilities in curves.items():
        filled = reliability_bins(probabilities, labels, bins)
        mean_confidence = [b["confidence"] for b in filled]
        accuracy = [b["accuracy"] for b in filled]
        ece = metrics.expected_calibration_error(probabilities, labels, bins)
        top.plot(mean_confidence, accuracy, "o-", label=f"{name} (ECE {ece:.3f})")
        bottom.hist(probabilities.max(axis=1), bins=edges, alpha=0.5, label=name)
    top.set(ylabel="accuracy", title="reliability (test)", xlim=(0, 1), ylim=(0, 1))
    top.legend(fontsize=8)
    bottom.set(xlabel="confidence", ylabel="texts")
    return to_png(figure)
