"""Temperature scaling: fitted on held-out logits, it fixes over-confidence without changing
a single predicted label."""

import numpy as np

from assets.model.calibration import (
    calibration_summary,
    fit_temperature,
    nll,
    reliability_diagram,
)


def overconfident(n: int = 4000, seed: int = 0):
    """Logits of a model right 75 % of the time that states ~99 % confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.75, labels, (labels + 1) % 3)
    logits = rng.normal(0, 0.3, (n, 3))
    logits[np.arange(n), predicted] += 5.0
    return logits, labels


def test_an_overconfident_model_gets_a_temperature_above_one_and_a_small_ece():
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature > 2
    summary = calibration_summary(logits, labels, temperature)
    assert summary["ece_before"] > 0.2 and summary["ece_after"] < 0.03
    assert summary["nll_after"] < summary["nll_before"]
    assert nll(logits, labels, temperature) <= nll(logits, labels, temperature * 1.2)


def test_scaling_never_changes_a_label_and_the_fit_holds_on_new_data():
    logits, labels = overconfident(seed=1)
    temperature = fit_temperature(*overconfident(seed=2))  # fitted on other texts
    assert (np.argmax(logits / temperature, axis=1) == np.argmax(logits, axis=1)).all()
    assert calibration_summary(logits, labels, temperature)["ece_after"] < 0.05


def test_reliability_diagram_renders():
    logits, labels = overconfident(500)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    png = reliability_diagram({"raw": probabilities}, labels)
    assert png.startswith(b"\x89PNG") and len(png) > 5000
