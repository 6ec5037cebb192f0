import numpy as np
import pytest

from assets.monitoring import drift_metrics as dm

RNG = np.random.default_rng(0)


def test_psi_and_ks_see_a_length_shift_and_not_the_same_distribution():
    train = RNG.normal(80, 20, 5000)
    same = RNG.normal(80, 20, 2000)
    longer = RNG.normal(140, 20, 2000)
    assert dm.population_stability_index(train, same) < 0.02
    assert dm.population_stability_index(train, longer) > 1.0
    statistic, p_value = dm.ks_test(train, same)
    assert p_value > 0.01 and statistic < 0.05
    statistic, p_value = dm.ks_test(train, longer)
    assert p_value < 1e-6 and statistic > 0.8


def test_psi_by_hand_on_two_bins():
    expected = np.array([0.0] * 50 + [1.0] * 50)
    actual = np.array([0.0] * 25 + [1.0] * 75)
    # bins split at the median: shares (0.5, 0.5) -> (0.25, 0.75)
    by_hand = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert dm.population_stability_index(expected, actual, bins=2) == pytest.approx(by_hand)


def test_label_mix_against_the_prior():
    prior = np.array([0.6, 0.4])
    matching = np.array([0] * 600 + [1] * 400)
    flipped = np.array([0] * 200 + [1] * 800)
    assert dm.label_mix_test(matching, prior)[1] > 0.5
    statistic, p_value = dm.label_mix_test(flipped, prior)
    assert p_value < 1e-10
    assert statistic == pytest.approx((200 - 600) ** 2 / 600 + (800 - 400) ** 2 / 400)


def test_unknown_token_share():
    assert dm.unknown_token_share([[1, 100, 2], [1, 100, 100, 2]], 100) == pytest.approx(3 / 7)
    assert dm.unknown_token_share([], 100) == 0.0


def test_embedding_drift():
    reference = RNG.normal(0, 1, (300, 16)) + 3
    same = RNG.normal(0, 1, (300, 16)) + 3
    moved = RNG.normal(0, 1, (300, 16)) - 3
    assert dm.mean_embedding_cosine_distance(reference, same) < 0.01
    assert dm.mean_embedding_cosine_distance(reference, moved) > 1.5
    assert dm.mmd_rbf(reference, same) < 0.01 < dm.mmd_rbf(reference, moved)


def test_mmd_permutation_test_holds_its_false_alarm_rate_and_finds_a_move():
    rng = np.random.default_rng(11)
    p_values = [
        dm.mmd_permutation_test(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), 99, seed)[1]
        for seed in range(60)
    ]
    assert 0.02 < float(np.mean(np.array(p_values) < 0.2)) < 0.4  # uniform under no drift
    assert min(p_values) >= 1 / 100  # the observed relabelling is counted
    statistic, p_value = dm.mmd_permutation_test(
        rng.normal(size=(40, 8)), rng.normal(0.6, size=(40, 8)), 199
    )
    assert p_value == 1 / 200 and statistic > 0


def test_holm_adjusts_the_family_of_drift_tests():
    adjusted = dm.holm_adjusted({"a": 0.004, "b": 0.03, "c": 0.02})
    assert adjusted == pytest.approx({"a": 0.012, "c": 0.04, "b": 0.04})


def test_three_borderline_tests_are_no_drift_together():
    from assets.monitoring.drift import DriftConfig, judge_family

    findings = {
        "length_ks": {"value": 0.3, "p_value": 0.008},
        "label_mix_chi2": {"value": 12.0, "p_value": 0.008},
        "embedding_mmd": {"value": 0.02, "p_value": 0.008},
    }
    judge_family(findings, DriftConfig(alpha=0.01))  # each alone would be below alpha
    assert not any(f["drift"] for f in findings.values())
    assert findings["length_ks"]["adjusted_p_value"] == pytest.approx(0.024)
    findings["label_mix_chi2"]["p_value"] = 0.001
    judge_family(findings, DriftConfig(alpha=0.01))
    assert [n for n, f in findings.items() if f["drift"]] == ["label_mix_chi2"]
