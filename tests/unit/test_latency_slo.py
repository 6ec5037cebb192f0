from data_checks.latency import latency_slo_outcome
from data_checks.outcome import Severity


def stats(p95, requests=100):
    return {"p50": p95 / 3, "p95": p95, "p99": p95 * 1.5, "requests": requests}


def test_a_model_over_the_objective_warns_and_is_named():
    outcome = latency_slo_outcome({"m:1": stats(120), "m:2": stats(450)}, 300, 20)
    assert not outcome.passed and outcome.severity is Severity.WARN
    assert outcome.description == "p95 latency over the objective of 300 ms: m:2 450 ms"
    assert outcome.metadata["models_over"] == ["m:2"]
    assert outcome.metadata["unexpected_count"] == 1


def test_within_the_objective_passes():
    outcome = latency_slo_outcome({"m:1": stats(120)}, 300, 20)
    assert outcome.passed and "within 300 ms" in outcome.description


def test_too_few_requests_are_not_judged():
    outcome = latency_slo_outcome({"m:1": stats(900, requests=5)}, 300, 20)
    assert outcome.passed and outcome.description.startswith("not judged")
