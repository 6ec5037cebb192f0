"""The monitoring stage's plot: text lengths of training data and served traffic."""

from __future__ import annotations

import numpy as np

from assets.plots import pyplot, to_png


def length_histograms(train_lengths: np.ndarray, served_lengths: np.ndarray) -> bytes:
    """Text lengths (characters) of the training split and of served traffic, as shares."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    top = max(float(np.percentile(train_lengths, 99.5)), float(np.max(served_lengths)), 1.0)
    bins = np.linspace(0, top, 40)
    axes.hist(train_lengths, bins=bins, density=True, alpha=0.6, label="train")
    axes.hist(served_lengths, bins=bins, density=True, alpha=0.6, label="served")
    axes.set(xlabel="characters", ylabel="density", title="text length")
    axes.legend()
    return to_png(figure)
