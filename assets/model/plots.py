"""The model stage's plots: training curves and the confusion matrix."""

from __future__ import annotations

import numpy as np

from assets.plots import pyplot, to_png


def training_curves(history: list[dict[str, float]]) -> bytes:
    """Training loss by step, and validation loss / macro F1 at each validation."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    train = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
    val = [h for h in history if "val/macro_f1" in h]
    if train:
        left.plot(*zip(*train, strict=True), label="train/loss", color="#1f77b4")
    if val:
        left.plot(
            [h["step"] for h in val],
            [h["val/loss"] for h in val],
            "o-",
            label="val/loss",
            color="#ff7f0e",
        )
        right.plot(
            [h["step"] for h in val], [h["val/macro_f1"] for h in val], "o-", color="#2ca02c"
        )
    left.set(xlabel="step", ylabel="loss", title="loss")
    left.legend()
    right.set(xlabel="step", ylabel="macro F1", title="validation macro F1")
    return to_png(figure)


def confusion_matrix(counts: np.ndarray, label_names: list[str]) -> bytes:
    plt = pyplot()
    size = 1.2 + 0.9 * len(label_names)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        axes.text(
            col,
            row,
            f"{count}\n{shares[row, col]:.0%}",
            ha="center",
            va="center",
            color="white" if shares[row, col] > 0.6 else "black",
            fontsize=9,
        )
    ticks = range(len(label_names))
    axes.set_xticks(ticks, label_names, rotation=30, ha="right")
    axes.set_yticks(ticks, label_names)
    axes.set(xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    figure.colorbar(image, ax=axes, fraction=0.046)
    return to_png(figure)
