import numpy as np
import pytest

from assets.model import metrics
from assets.serving.approve import ApprovalConfig
from assets.serving.gate import PairedDelta, Scores, decide


def rules(**changed):
    """The gate's rules: ApprovalConfig's defaults, with `changed`."""
    return ApprovalConfig(**changed).rules()


def scores(value, hate=0.5, baseline=0.40, test_hash="t1", low=None, high=None):
    return Scores(
        "macro_f1",
        value,
        (low or value - 0.02, high or value + 0.02),
        {"not-hate": value + 0.1, "hate": hate},
        test_hash,
        baseline,
    )


def test_better_challenger_is_approved_with_a_readable_sentence():
    paired = PairedDelta(0.02, 0.004, 0.036)
    decision = decide(scores(0.51), scores(0.49), rules(), paired=paired)
    assert decision.approved and not decision.forced
    assert decision.summary == (
        "approved: macro F1 0.51 vs champion 0.49, paired +0.020 [CI +0.004 to +0.036]"
    )
    assert all(c.passed for c in decision.comparisons)
    assert decision.to_dict()["paired"] == {"delta": 0.02, "low": 0.004, "high": 0.036}


def test_worse_challenger_is_rejected_with_the_failed_rule():
    decision = decide(scores(0.47), scores(0.49), rules(), paired=PairedDelta(-0.02, -0.04, 0))
    assert not decision.approved
    assert decision.summary.startswith("rejected: macro F1 0.47 vs champion 0.49, paired -0.020")
    assert decision.reasons == [
        "failed: paired difference in macro F1: lower 95 % bound >= -0.01 (-0.0400 vs -0.0100)"
    ]


def test_margin_is_required():
    noise = PairedDelta(0.01, -0.005, 0.025)
    assert not decide(scores(0.50), scores(0.49), rules(margin=0.0), paired=noise).approved
    assert decide(scores(0.50), scores(0.49), rules(margin=-0.01), paired=noise).approved
    with pytest.raises(ValueError, match="paired predictions"):
        decide(scores(0.50), scores(0.49), rules())


def test_class_regression_rejects_despite_a_better_average():
    gain = PairedDelta(0.03, 0.01, 0.05)
    decision = decide(scores(0.52, hate=0.40), scores(0.49, hate=0.50), rules(), paired=gain)
    assert not decision.approved
    assert decision.reasons == ["failed: F1 of 'hate' drops by at most 0.05 (0.4000 vs 0.4500)"]


def test_no_champion_applies_the_floor_and_the_baseline():
    assert decide(scores(0.45), None, rules(absolute_floor=0.4)).approved
    low = decide(scores(0.35, baseline=0.30), None, rules(absolute_floor=0.4))
    assert not low.approved and "no champion yet" in low.summary
    under_baseline = decide(scores(0.45, baseline=0.46), None, rules())
    assert not under_baseline.approved
    assert "TF-IDF baseline" in under_baseline.reasons[0]
    assert decide(scores(0.45, baseline=0.46), None, rules(must_beat_baseline=False)).approved


def test_force_overrides_and_is_recorded():
    loss = PairedDelta(-0.09, -0.12, -0.06)
    decision = decide(
        scores(0.40), scores(0.49), rules(), force_reason="hotfix for #12", paired=loss
    )
    assert decision.approved and decision.forced
    assert decision.reasons[-1] == "forced: hotfix for #12"
    assert decision.summary.startswith("approved (forced)")
    assert not decide(scores(0.40), scores(0.49), rules(), paired=loss).approved


def test_scores_on_different_test_splits_cannot_be_compared():
    with pytest.raises(ValueError, match="same test split"):
        decide(scores(0.5), scores(0.4, test_hash="t2"), rules(), paired=PairedDelta(0, 0, 0))


# Constructed predictions on one test set of 2,000 texts: the champion is right 70 % of the time.
RNG = np.random.default_rng(7)
Y = RNG.integers(0, 2, 2000)
CHAMPION = np.where(RNG.random(2000) < 0.70, Y, 1 - Y)


def challenger_fixing(share_fixed: float, share_broken: float, seed: int) -> np.ndarray:
    """The champion's predictions with some of its errors fixed and some right answers broken."""
    rng = np.random.default_rng(seed)
    out = CHAMPION.copy()
    wrong, right = np.flatnonzero(CHAMPION != Y), np.flatnonzero(CHAMPION == Y)
    fix = rng.choice(wrong, int(share_fixed * len(wrong)), replace=False)
    out[fix] = Y[fix]
    broken = rng.choice(right, int(share_broken * len(right)), replace=False)
    out[broken] = 1 - Y[broken]
    return out


def gate(challenger: np.ndarray, margin: float = -0.01):
    delta, low, high = metrics.paired_bootstrap("macro_f1", Y, challenger, CHAMPION, 2, 1000, 0)
    mine, theirs = (metrics.score("macro_f1", Y, p, 2) for p in (challenger, CHAMPION))
    return decide(
        Scores("macro_f1", mine, (mine, mine), {}, "t"),
        Scores("macro_f1", theirs, (theirs, theirs), {}, "t"),
        rules(margin=margin, must_beat_baseline=False),
        paired=PairedDelta(delta, low, high),
    )


def test_a_real_gain_is_approved():
    decision = gate(challenger_fixing(0.20, 0.02, seed=1))  # fixes a fifth of the errors
    assert decision.paired.low > 0 and decision.approved


def test_a_noise_level_gain_is_not_progress():
    noisy = challenger_fixing(0.13, 0.055, seed=2)  # many changes that nearly cancel out
    decision = gate(noisy, margin=0.0)  # asking for a gain beyond noise
    assert 0 < decision.paired.delta < 0.01
    assert decision.paired.low < 0 and not decision.approved
    # a point-estimate rule would have approved it: the challenger's number is higher
    assert metrics.score("macro_f1", Y, noisy, 2) > metrics.score("macro_f1", Y, CHAMPION, 2)


def test_a_real_loss_is_rejected_even_within_a_non_inferiority_margin():
    decision = gate(challenger_fixing(0.02, 0.08, seed=3))  # breaks 8 % of the right answers
    assert decision.paired.high < 0 and decision.paired.low < -0.01 and not decision.approved
