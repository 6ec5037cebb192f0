"""Which serving variant an approved model runs on: parity on the test split, then speed."""

import numpy as np
import pytest

from assets.serving.export import VariantScore, choose, parity

Y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
REFERENCE = np.eye(2)[Y]  # the PyTorch model labels every text right: macro F1 1.0


def probabilities(labels) -> np.ndarray:
    return np.eye(2)[np.array(labels)] * 0.8 + 0.1


def test_a_variant_within_the_tolerance_passes_and_its_agreement_is_recorded():
    same = parity("onnx-int8", Y, probabilities(Y), Y, "macro_f1", 1.0, 0.005, 300.0)
    assert same.passed and same.agreement == 1.0 and same.value == 1.0
    flipped = Y.copy()
    flipped[0] = 1  # one text of ten labelled otherwise
    drift = parity("onnx-int8", Y, probabilities(flipped), Y, "macro_f1", 1.0, 0.005, 300.0)
    assert not drift.passed and drift.agreement == pytest.approx(0.9)
    assert "beyond ±0.005" in drift.reason and drift.value < 0.95


def score(name, per_s, passed=True):
    return VariantScore(name, 0.5, 1.0, per_s, passed, "within" if passed else "beyond")


def test_the_fastest_variant_that_passed_is_served():
    scores = [score("pytorch", 100), score("onnx-int8", 300, False), score("onnx-fp32", 150)]
    variant, why = choose(scores)
    assert variant == "onnx-fp32"
    assert "fastest that passed parity" in why and "failed: onnx-int8: beyond" in why
    assert choose(scores[:1])[0] == "pytorch"


def test_a_pinned_variant_is_served_whatever_parity_says():
    scores = [score("pytorch", 100), score("onnx-int8", 300, False)]
    assert choose(scores, pinned="onnx-int8")[0] == "onnx-int8"
    with pytest.raises(ValueError, match="serving_variant 'tensorrt' is not one of"):
        choose(scores, pinned="tensorrt")
