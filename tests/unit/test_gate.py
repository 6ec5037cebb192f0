import pytest

from assets.serving.gate import GateRules, Scores, decide


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
    decision = decide(scores(0.51, low=0.49, high=0.53), scores(0.49), GateRules())
    assert decision.approved and not decision.forced
    assert decision.summary == "approved: macro F1 0.51 vs champion 0.49, +0.02 [CI 0.49–0.53]"
    assert all(c.passed for c in decision.comparisons)


def test_worse_challenger_is_rejected_with_the_failed_rule():
    decision = decide(scores(0.47), scores(0.49), GateRules())
    assert not decision.approved
    assert decision.summary.startswith("rejected: macro F1 0.47 vs champion 0.49, -0.02")
    assert any("champion" in r for r in decision.reasons)


def test_margin_is_required():
    assert not decide(scores(0.50), scores(0.49), GateRules(margin=0.02)).approved
    assert decide(scores(0.51), scores(0.49), GateRules(margin=0.02)).approved


def test_class_regression_rejects_despite_a_better_average():
    decision = decide(scores(0.52, hate=0.40), scores(0.49, hate=0.50), GateRules())
    assert not decision.approved
    assert decision.reasons == ["failed: F1 of 'hate' drops by at most 0.05 (0.4000 vs 0.4500)"]


def test_no_champion_applies_the_floor_and_the_baseline():
    assert decide(scores(0.45), None, GateRules(absolute_floor=0.4)).approved
    low = decide(scores(0.35, baseline=0.30), None, GateRules(absolute_floor=0.4))
    assert not low.approved and "no champion yet" in low.summary
    under_baseline = decide(scores(0.45, baseline=0.46), None, GateRules())
    assert not under_baseline.approved
    assert "TF-IDF baseline" in under_baseline.reasons[0]
    assert decide(scores(0.45, baseline=0.46), None, GateRules(must_beat_baseline=False)).approved


def test_force_overrides_and_is_recorded():
    decision = decide(scores(0.40), scores(0.49), GateRules(), force_reason="hotfix for #12")
    assert decision.approved and decision.forced
    assert decision.reasons[-1] == "forced: hotfix for #12"
    assert decision.summary.startswith("approved (forced)")
    assert decide(scores(0.40), scores(0.49), GateRules(), force_reason=None).approved is False


def test_scores_on_different_test_splits_cannot_be_compared():
    with pytest.raises(ValueError, match="same test split"):
        decide(scores(0.5), scores(0.4, test_hash="t2"), GateRules())
