"""The approval rule: a challenger replaces the champion only when, scored on the same frozen
test texts, it is not worse beyond noise (a paired bootstrap of the difference), loses no class,
and beats the cheap baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from assets.model.metrics import metric_label


@dataclass(frozen=True)
class Scores:
    """One model's scores on one test split."""

    metric: str
    value: float
    ci95: tuple[float, float]
    per_class_f1: dict[str, float]
    test_hash: str
    baseline: float | None = None  # the TF-IDF baseline on the same split


@dataclass(frozen=True)
class PairedDelta:
    """challenger - champion on the same test texts, with the 95 % interval of a paired
    bootstrap (the same resamples for both models)."""

    delta: float
    low: float
    high: float


@dataclass(frozen=True)
class GateRules:
    """The gate's settings, made by ApprovalConfig.rules() (assets/serving/approve.py), where
    each one's default and meaning are declared."""

    margin: float
    max_class_f1_drop: float
    absolute_floor: float
    must_beat_baseline: bool


@dataclass
class Comparison:
    rule: str
    challenger: float
    reference: float
    passed: bool


@dataclass
class Decision:
    approved: bool
    forced: bool
    summary: str
    reasons: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    paired: PairedDelta | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def against_champion(
    challenger: Scores, champion: Scores, rules: GateRules, paired: PairedDelta | None
) -> list[Comparison]:
    """The rules that compare with a champion: the paired difference's lower bound, and no
    class losing more F1 than allowed."""
    if champion.test_hash != challenger.test_hash or champion.metric != challenger.metric:
        raise ValueError(
            "champion and challenger must be scored with the same metric on the same test split"
        )
    if paired is None:
        raise ValueError("a challenger is compared with its champion on paired predictions")
    name = metric_label(challenger.metric)
    comparisons = [
        Comparison(
            f"paired difference in {name}: lower 95 % bound >= {rules.margin:+g}",
            paired.low,
            rules.margin,
            paired.low >= rules.margin,
        )
    ]
    for label, f1 in challenger.per_class_f1.items():
        floor = champion.per_class_f1.get(label, 0.0) - rules.max_class_f1_drop
        comparisons.append(
            Comparison(
                f"F1 of '{label}' drops by at most {rules.max_class_f1_drop:g}",
                f1,
                floor,
                f1 >= floor,
            )
        )
    return comparisons


def decide(
    challenger: Scores,
    champion: Scores | None,
    rules: GateRules,
    force_reason: str | None = None,
    paired: PairedDelta | None = None,
    incomparable: str | None = None,
) -> Decision:
    """`incomparable`: the champion (this tag) classifies into other classes, so there is no
    comparison; only `force` approves then, judged on the floor and the baseline."""
    name = metric_label(challenger.metric)
    comparisons: list[Comparison] = []
    if incomparable is not None:
        comparisons.append(Comparison(f"same classes as champion {incomparable}", 0.0, 1.0, False))
    if champion is not None:
        comparisons += against_champion(challenger, champion, rules, paired)
    else:
        comparisons.append(
            Comparison(
                f"{name} >= floor (no champion)",
                challenger.value,
                rules.absolute_floor,
                challenger.value >= rules.absolute_floor,
            )
        )
    if rules.must_beat_baseline and challenger.baseline is not None:
        comparisons.append(
            Comparison(
                f"{name} > TF-IDF baseline",
                challenger.value,
                challenger.baseline,
                challenger.value > challenger.baseline,
            )
        )
    failed = [c for c in comparisons if not c.passed]
    reasons = [f"failed: {c.rule} ({c.challenger:.4f} vs {c.reference:.4f})" for c in failed]
    approved = not failed
    forced = False
    if failed and force_reason:
        approved, forced = True, True
        reasons.append(f"forced: {force_reason}")
    return Decision(
        approved,
        forced,
        _sentence(name, approved, forced, challenger, champion, paired, failed, incomparable),
        reasons,
        comparisons,
        paired,
    )


def _sentence(
    name: str,
    approved: bool,
    forced: bool,
    challenger: Scores,
    champion: Scores | None,
    paired: PairedDelta | None,
    failed: list[Comparison],
    incomparable: str | None = None,
) -> str:
    verdict = "approved (forced)" if forced else "approved" if approved else "rejected"
    if champion is None or paired is None:
        low, high = challenger.ci95
        interval = f"[CI {low:.2f}–{high:.2f}]"
        against = "champion not comparable" if incomparable else "no champion yet"
        text = f"{verdict}: {name} {challenger.value:.2f} {interval}, {against}"
    else:
        text = (
            f"{verdict}: {name} {challenger.value:.2f} vs champion {champion.value:.2f}, "
            f"paired {paired.delta:+.3f} [CI {paired.low:+.3f} to {paired.high:+.3f}]"
        )
    if failed:
        text += "; failed " + ", ".join(c.rule for c in failed)
    return text
