"""PNG plots for reports, rendered headless; embeddable in Dagster markdown metadata."""

from __future__ import annotations

import base64
import io

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(figure)
    return buffer.getvalue()


def training_curves(history: list[dict[str, float]]) -> bytes:
    """Training loss by step, and validation loss / macro F1 at each validation."""
    plt = _figure()
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
    return _png(figure)


def confusion_matrix(counts: np.ndarray, label_names: list[str]) -> bytes:
    plt = _figure()
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
    return _png(figure)


def markdown_image(png: bytes, alt: str) -> str:
    """Inline image for markdown metadata: the UI shows it without access to the store."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def length_histograms(train_lengths: np.ndarray, served_lengths: np.ndarray) -> bytes:
    """Text lengths (characters) of the training split and of served traffic, as shares."""
    plt = _figure()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    top = max(float(np.percentile(train_lengths, 99.5)), float(np.max(served_lengths)), 1.0)
    bins = np.linspace(0, top, 40)
    axes.hist(train_lengths, bins=bins, density=True, alpha=0.6, label="train")
    axes.hist(served_lengths, bins=bins, density=True, alpha=0.6, label="served")
    axes.set(xlabel="characters", ylabel="density", title="text length")
    axes.legend()
    return _png(figure)
