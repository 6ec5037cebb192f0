"""Which serving variant an approved model runs on: parity on the test split, then speed."""

import numpy as np
import pytest

from assets.model.metrics import parse_metric
from assets.serving.export import VariantScore, choose, parity
from assets.serving.variants import ServingVariantsConfig

# 2,000 test texts; the PyTorch reference is right on 70 % of them
RNG = np.random.default_rng(3)
Y = RNG.integers(0, 2, 2000)
REFERENCE = np.where(RNG.random(2000) < 0.7, Y, 1 - Y)
MACRO_F1 = parse_metric("macro_f1")
RULES = ServingVariantsConfig(parity_tolerance=0.01, min_agreement=0.99).parity_rules()


def probabilities(labels) -> np.ndarray:
    return np.eye(2)[np.array(labels)] * 0.8 + 0.1


def changed(fix: int, break_: int) -> np.ndarray:
    """The reference's labels with `fix` of its errors fixed and `break_` right ones broken."""
    out = REFERENCE.copy()
    wrong, right = np.flatnonzero(REFERENCE != Y), np.flatnonzero(REFERENCE == Y)
    out[wrong[:fix]] = Y[wrong[:fix]]
    out[right[:break_]] = 1 - Y[right[:break_]]
    return out


def check(labels, consistency=1.0):
    return parity("onnx-int8", REFERENCE, probabilities(labels), Y, MACRO_F1, RULES, 300.0,
                  consistency)  # fmt: skip


def test_the_same_labels_pass_with_a_zero_difference():
    same = check(REFERENCE)
    assert same.passed and same.agreement == 1.0 and same.delta == 0.0
    assert (same.delta_low, same.delta_high) == (0.0, 0.0)


def test_a_variant_that_scores_higher_is_never_disqualified_for_it():
    better = check(changed(fix=15, break_=0))  # 15 texts of 2,000 differ, all for the better
    assert better.delta > 0 and better.delta_low > -0.01
    assert better.passed and better.agreement == pytest.approx(0.9925)
    assert "paired +0.0" in better.reason


def test_a_variant_that_agrees_too_little_is_not_eligible_however_it_scores():
    noisy = check(changed(fix=30, break_=30))  # 3 % of labels move, in both directions
    assert noisy.agreement == pytest.approx(0.97)
    assert not noisy.passed and "agreement 97.00% below 99%" in noisy.reason


def test_the_report_states_each_margin_over_its_floor():
    """An operator reads "margin +0.25 points" over the 99.0 % floor, not just pass or fail."""
    from assets.serving.variants import margins

    better = check(changed(fix=15, break_=0))
    assert better.agreement_margin == pytest.approx(0.0025)
    assert better.bound_margin == pytest.approx(better.delta_low + 0.01)
    assert "agreement 99.25% (floor 99.0%, margin +0.25 points)" in better.reason
    assert f"floor -0.01, margin {better.bound_margin:+.4f}]" in better.reason
    noisy = check(changed(fix=30, break_=30))
    assert noisy.agreement_margin == pytest.approx(-0.02)
    assert "agreement 97.00% (floor 99.0%, margin -2.00 points)" in noisy.reason
    assert margins(vars(better)) == f"+0.25 pt, {better.bound_margin:+.4f}"
    assert margins({"agreement": 1.0}) == ""  # the reference has no floor


def test_a_variant_worse_beyond_the_tolerance_is_not_eligible():
    worse = check(changed(fix=0, break_=19))
    assert worse.agreement > 0.99 and worse.delta_low < -0.01
    assert not worse.passed and "below -0.01" in worse.reason


def test_a_text_answered_otherwise_alone_than_in_a_batch_disqualifies():
    inconsistent = check(REFERENCE, consistency=0.995)
    assert not inconsistent.passed and "99.50% of texts labelled alone as in a batch" in (
        inconsistent.reason
    )


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


def test_the_choice_weighs_lone_texts_as_much_as_full_batches():
    # int8 a little slower in batches of 32 but much faster one text at a time (the service at
    # low load): served; fp32 faster both ways: served
    int8 = VariantScore("onnx-int8", 0.5, 1.0, 290.0, True, "within", alone_texts_per_s=150.0)
    fp32 = VariantScore("onnx-fp32", 0.5, 1.0, 300.0, True, "within", alone_texts_per_s=100.0)
    variant, why = choose([fp32, int8])
    assert variant == "onnx-int8"
    assert "290 texts/s in batches, 150 alone" in why
    fp32.alone_texts_per_s = 160.0
    assert choose([fp32, int8])[0] == "onnx-fp32"
    assert int8.speed() == pytest.approx((290.0 * 150.0) ** 0.5)
