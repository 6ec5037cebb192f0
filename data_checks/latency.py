"""The latency objective of the served model, judged on the request latencies the service
logged: a pure function over per-model percentiles."""

from __future__ import annotations

from data_checks.outcome import CheckOutcome, Severity


def latency_slo_outcome(
    latency_ms: dict[str, dict[str, float]], p95_slo_ms: float, min_requests: int
) -> CheckOutcome:
    """Fails (WARN) when a model with at least `min_requests` requests in the window answered
    its 95th-percentile request slower than `p95_slo_ms`."""
    judged = {tag: s for tag, s in latency_ms.items() if s["requests"] >= min_requests}
    over = {tag: s for tag, s in judged.items() if s["p95"] > p95_slo_ms}
    if not judged:
        description = (
            f"not judged: no model served {min_requests} requests in the window (min_requests)"
        )
    elif over:
        description = "p95 latency over the objective of {:g} ms: {}".format(
            p95_slo_ms,
            ", ".join(f"{tag} {s['p95']:.0f} ms" for tag, s in sorted(over.items())),
        )
    else:
        description = f"p95 latency within {p95_slo_ms:g} ms for every model"
    return CheckOutcome(
        passed=not over,
        severity=Severity.WARN,
        description=description,
        metadata={
            "p95_slo_ms": p95_slo_ms,
            "unexpected_count": len(over),
            "models_over": sorted(over),
            "latency_ms": judged,
        },
    )
