"""How a running deployment follows the registry's champion: which model is live, which one is
being rolled out, and the rules that promote it or send it back.

Every worker of a deployment reads one small state file (`state.json` in the rollout folder) and
serves its `live` tag; a candidate is loaded and verified by every worker before it takes any
traffic, runs as a shadow on live traffic, and is promoted (every worker switches within a poll)
or rejected with a reason. One worker at a time, the one holding the folder's leader lock,
decides: it reads the registry, the workers' reports (`workers/<pid>.json`) and writes the state.
The decisions are `plan`, a pure function of those, so that the rules are tested without
processes. Standard library, numpy and filelock only (the service image has no pipeline code).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textops_core.settings import ServiceSettings

logger = logging.getLogger("textops.rollout")

STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"
WORKERS_DIR = "workers"
LATENCY_SAMPLES = 2000  # most latencies a worker keeps per model for its p95
WITHDRAWN_BY = "textops-rollout"


@dataclass(frozen=True)
class RolloutSettings:
    """How the service follows the registry: made from ServiceSettings by `of`, where each
    setting's default and meaning are declared."""

    follow: bool  # follow the champion, or serve the model resolved at start
    store: Path | None  # the models folder followed (None: the service's)
    folder: Path  # state, history and worker reports of this deployment
    interval_s: float  # how often the registry is read
    poll_s: float  # how often a worker reads the state
    shadow_requests: int  # 0: no shadow
    shadow_minutes: float
    max_error_rate: float
    max_p95_ratio: float  # against the live model's p95
    max_label_shift: float  # total variation distance
    probation_hours: float
    latency_slo_ms: float  # p95 of a live model's requests
    min_requests: int  # before a live model is judged
    load_timeout_s: float = 600.0  # a candidate not loaded by every worker by then is rejected

    @classmethod
    def of(cls, settings: ServiceSettings, home: Path) -> RolloutSettings:
        """The rollout's settings, from the service's (`home`: BentoML's home)."""
        store = settings.follow_store.strip()
        containerized = os.environ.get("BENTOML_CONTAINERIZED", "").lower() == "true"
        # A built image serves the model it was built with, unless it is given a store to follow
        follow = (
            settings.follow if settings.follow is not None else bool(store) or not containerized
        )
        if store and not Path(store).is_dir():
            raise ValueError(
                f"TEXTOPS_FOLLOW_STORE={store!r} is not a folder: give the BentoML models folder "
                f"to follow (a mounted volume's `models`, holding textops-classifier/)"
            )
        deployment = settings.deployment.strip() or "default"
        if "/" in deployment or deployment.startswith("."):
            raise ValueError(f"TEXTOPS_DEPLOYMENT must be a plain name, got {deployment!r}")
        folder = settings.rollout_dir.strip()
        return cls(
            follow=follow,
            store=Path(store) if store else None,
            folder=Path(folder) if folder else home / "textops-rollout" / deployment,
            interval_s=settings.follow_interval_s,
            poll_s=min(settings.rollout_poll_s, settings.follow_interval_s),
            shadow_requests=settings.shadow_requests,
            shadow_minutes=settings.shadow_minutes,
            max_error_rate=settings.shadow_max_error_rate,
            max_p95_ratio=settings.shadow_max_p95_ratio,
            max_label_shift=settings.shadow_max_label_shift,
            probation_hours=settings.probation_hours,
            latency_slo_ms=settings.latency_slo_ms,
            min_requests=settings.probation_min_requests,
        )

    def models_folder(self, own: Path) -> Path:
        return self.store if self.store is not None else own


# --- what a worker measures ------------------------------------------------------------------


@dataclass
class Stats:
    """Requests one model answered (live) or shadowed in one worker: counts, a sample of its
    inference latencies, its label mix and, for a shadow, its agreement with the live model."""

    requests: int = 0
    errors: int = 0
    texts: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    reference_latencies_ms: list[float] = field(default_factory=list)  # the live model's
    labels: dict[str, int] = field(default_factory=dict)
    agreed: int = 0
    compared: int = 0

    def record(
        self,
        latency_ms: float,
        labels: list[str],
        reference: list[str] | None = None,
        reference_ms: float | None = None,
    ) -> None:
        self.requests += 1
        self.texts += len(labels)
        _keep(self.latencies_ms, latency_ms)
        if reference_ms is not None:
            _keep(self.reference_latencies_ms, reference_ms)
        for label in labels:
            self.labels[label] = self.labels.get(label, 0) + 1
        if reference is not None:
            self.compared += len(labels)
            self.agreed += sum(a == b for a, b in zip(labels, reference, strict=True))

    def failed(self) -> None:
        self.requests += 1
        self.errors += 1

    @classmethod
    def merged(cls, many: list[dict[str, Any]]) -> Stats:
        total = cls()
        for one in many:
            total.requests += one.get("requests", 0)
            total.errors += one.get("errors", 0)
            total.texts += one.get("texts", 0)
            total.latencies_ms += one.get("latencies_ms", [])
            total.reference_latencies_ms += one.get("reference_latencies_ms", [])
            for label, n in one.get("labels", {}).items():
                total.labels[label] = total.labels.get(label, 0) + n
            total.agreed += one.get("agreed", 0)
            total.compared += one.get("compared", 0)
        return total


def _keep(samples: list[float], value: float) -> None:
    samples.append(round(value, 3))
    if len(samples) > LATENCY_SAMPLES:
        del samples[: len(samples) - LATENCY_SAMPLES]


def p95(samples: list[float]) -> float | None:
    return float(np.percentile(samples, 95)) if samples else None


def label_shift(observed: dict[str, int], expected: dict[str, float]) -> float | None:
    """Total variation distance between the label mix observed and the expected shares (0: the
    same mix, 1: no class in common)."""
    total = sum(observed.values())
    if not total or not expected:
        return None
    names = set(observed) | set(expected)
    return 0.5 * sum(abs(observed.get(n, 0) / total - expected.get(n, 0.0)) for n in names)


# --- the state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    """What the leader read of the registry: its champion, and whether the live model is still
    approved there (a withdrawn live model is a rollback)."""

    tag: str | None
    live_approved: bool
    newer_than_live: bool  # the champion was published after the live model
    expected_mix: dict[str, float]  # the champion's label mix in its own evaluation


def empty_state(tag: str, now: float, reason: str) -> dict[str, Any]:
    return {
        "live": {"tag": tag, "since": now, "previous": None, "reason": reason},
        "candidate": None,
        "rejected": {},
    }


@dataclass
class Plan:
    state: dict[str, Any]
    withdraw: list[tuple[str, str]] = field(default_factory=list)  # (tag, reason)
    events: list[dict[str, Any]] = field(default_factory=list)


def shadow_verdict(
    shadow: Stats, expected_mix: dict[str, float], settings: RolloutSettings
) -> tuple[bool, str, dict[str, Any]]:
    """(promote?, why, the numbers) for a candidate after its shadow window."""
    numbers: dict[str, Any] = {
        "requests": shadow.requests,
        "texts": shadow.texts,
        "errors": shadow.errors,
        "error_rate": shadow.errors / shadow.requests if shadow.requests else 0.0,
        "p95_ms": p95(shadow.latencies_ms),
        "live_p95_ms": p95(shadow.reference_latencies_ms),
        "label_mix": shadow.labels,
        "expected_label_mix": expected_mix,
        "label_shift": label_shift(shadow.labels, expected_mix),
        "agreement": shadow.agreed / shadow.compared if shadow.compared else None,
    }
    problems = []
    if numbers["error_rate"] > settings.max_error_rate:
        problems.append(
            f"errors on {numbers['error_rate']:.1%} of shadowed requests "
            f"(at most {settings.max_error_rate:.1%})"
        )
    mine, theirs = numbers["p95_ms"], numbers["live_p95_ms"]
    # a millisecond of slack: tiny latencies differ by ratios that mean nothing
    if mine is not None and theirs is not None and mine > theirs * settings.max_p95_ratio + 1.0:
        problems.append(
            f"p95 latency {mine:.1f} ms against the live model's {theirs:.1f} ms "
            f"(at most {settings.max_p95_ratio:g}x)"
        )
    shift = numbers["label_shift"]
    if shift is not None and shift > settings.max_label_shift:
        problems.append(
            f"label mix {_mix(shadow.labels)} is {shift:.2f} from its evaluation's "
            f"{_expected(expected_mix)} (total variation, at most {settings.max_label_shift:g})"
        )
    if problems:
        return False, "; ".join(problems), numbers
    agreement = numbers["agreement"]
    why = (
        f"shadow on {shadow.requests} requests: {shadow.errors} errors, p95 "
        f"{_ms(mine)} (live {_ms(theirs)}), label shift "
        f"{'n/a' if shift is None else f'{shift:.2f}'}"
        + (f", agreement with live {agreement:.1%}" if agreement is not None else "")
    )
    return True, why, numbers


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _mix(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return "{" + ", ".join(f"{k}: {v / total:.0%}" for k, v in sorted(counts.items())) + "}"


def _expected(shares: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:.0%}" for k, v in sorted(shares.items())) + "}"


def plan(
    state: dict[str, Any],
    champion: Champion,
    workers: list[dict[str, Any]],
    now: float,
    settings: RolloutSettings,
) -> Plan:
    """The leader's next decision, from the state, the registry and the live workers' reports."""
    state = json.loads(json.dumps(state))  # never change the caller's copy
    out = Plan(state)
    live = state["live"]
    candidate = state.get("candidate")
    rejected = state.setdefault("rejected", {})

    if candidate is not None and champion.tag != candidate["tag"]:
        out.events.append(
            {
                "event": "abandoned",
                "tag": candidate["tag"],
                "reason": f"the registry's champion is now {champion.tag}",
            }
        )
        state["candidate"] = candidate = None

    if candidate is None:
        if champion.tag is None or champion.tag == live["tag"] or champion.tag in rejected:
            _probation(out, workers, now, settings)
            return out
        candidate = _start_candidate(out, champion, now)

    tag = candidate["tag"]
    failures = {w["pid"]: w.get("failed", {}).get(tag) for w in workers}
    failed = {pid: why for pid, why in failures.items() if why}
    if failed:
        reason = f"not served: {next(iter(failed.values()))}"
        _reject(out, tag, reason, withdraw=False)
    elif candidate["phase"] == "loading":
        _loading(out, candidate, workers, now, settings)
    else:
        _shadowing(out, candidate, workers, now, settings)
    return out


def _start_candidate(out: Plan, champion: Champion, now: float) -> dict[str, Any]:
    """The registry's champion becomes the candidate: a rollback when it is not newer than the
    live model or the live one is no longer approved."""
    rollback = not champion.live_approved or not champion.newer_than_live
    candidate = out.state["candidate"] = {
        "tag": champion.tag,
        "kind": "rollback" if rollback else "new",
        "phase": "loading",
        "since": now,
        "shadow_since": None,
        "expected_mix": champion.expected_mix,
    }
    out.events.append({"event": "loading", "tag": champion.tag, "kind": candidate["kind"]})
    return candidate


def _loading(
    out: Plan,
    candidate: dict[str, Any],
    workers: list[dict[str, Any]],
    now: float,
    settings: RolloutSettings,
) -> None:
    """Once every worker has the candidate loaded: promoted (a rollback, or shadow off) or
    shadowed; rejected when the workers take longer than the load timeout."""
    tag = candidate["tag"]
    if workers and all(tag in w.get("ready", []) for w in workers):
        if candidate["kind"] == "rollback" or settings.shadow_requests == 0:
            why = (
                "rollback: served again once verified"
                if candidate["kind"] == "rollback"
                else "verified; shadow is off"
            )
            _promote(out, candidate, now, why, None)
        else:
            candidate["phase"] = "shadow"
            candidate["shadow_since"] = now
            out.events.append({"event": "shadow", "tag": tag})
    elif now - candidate["since"] > settings.load_timeout_s:
        _reject(out, tag, f"not loaded by every worker in {settings.load_timeout_s:.0f} s")


def _shadowing(
    out: Plan,
    candidate: dict[str, Any],
    workers: list[dict[str, Any]],
    now: float,
    settings: RolloutSettings,
) -> None:
    """Once the shadow has seen enough requests, or its window is over: the verdict."""
    tag = candidate["tag"]
    shadow = Stats.merged([w.get("shadow", {}).get(tag, {}) for w in workers])
    window_over = now - candidate["shadow_since"] >= settings.shadow_minutes * 60
    if shadow.requests < settings.shadow_requests and not window_over:
        return
    promote, why, numbers = shadow_verdict(shadow, candidate.get("expected_mix", {}), settings)
    if promote:
        _promote(out, candidate, now, why, numbers)
    else:
        _reject(out, tag, f"shadow: {why}", withdraw=True, numbers=numbers)


def _promote(
    out: Plan, candidate: dict[str, Any], now: float, why: str, shadow: dict[str, Any] | None
) -> None:
    previous = out.state["live"]["tag"]
    out.state["live"] = {
        "tag": candidate["tag"],
        "since": now,
        "previous": previous,
        "reason": why,
        "kind": candidate["kind"],
        "shadow": shadow,
    }
    out.state["candidate"] = None
    out.events.append(
        {
            "event": "live",
            "tag": candidate["tag"],
            "previous": previous,
            "kind": candidate["kind"],
            "reason": why,
            "shadow": shadow,
            "approval_to_live_s": now - candidate["since"],
        }
    )


def _reject(
    out: Plan,
    tag: str,
    reason: str,
    withdraw: bool = False,
    numbers: dict[str, Any] | None = None,
) -> None:
    out.state["rejected"][tag] = reason
    out.state["candidate"] = None
    if withdraw:
        out.withdraw.append((tag, reason))
    out.events.append({"event": "rejected", "tag": tag, "reason": reason, "shadow": numbers})


def _probation(
    out: Plan, workers: list[dict[str, Any]], now: float, settings: RolloutSettings
) -> None:
    """A new model in its first hours that regresses live is recorded as a regression (once);
    Dagster's regression_sensor rolls it back (a `rollback` run tagged with the trigger), and
    the previous model comes back here as a rollback."""
    live = out.state["live"]
    if (
        live.get("kind") != "new"
        or now - live["since"] > settings.probation_hours * 3600
        or live.get("regressed")
    ):
        return
    stats = Stats.merged([w.get("live", {}).get(live["tag"], {}) for w in workers])
    if stats.requests < settings.min_requests:
        return
    problems = []
    if stats.errors / stats.requests > settings.max_error_rate:
        problems.append(
            f"errors on {stats.errors / stats.requests:.1%} of requests "
            f"(at most {settings.max_error_rate:.1%})"
        )
    latency = p95(stats.latencies_ms)
    if latency is not None and latency > settings.latency_slo_ms:
        problems.append(f"p95 latency {latency:.0f} ms over the {settings.latency_slo_ms:g} ms SLO")
    if problems:
        reason = f"live regression in its first {settings.probation_hours:g} h: " + "; ".join(
            problems
        )
        live["regressed"] = reason
        out.events.append({"event": "regression", "tag": live["tag"], "reason": reason})


# --- files ----------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # written by os.replace, so only a hand-edited file is torn
        logger.warning("ignoring %s: it is not valid JSON", path)
        return None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomically: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps(value, sort_keys=True))
    os.replace(staged, path)


def read_state(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / STATE_FILE)


def append_history(folder: Path, events: list[dict[str, Any]], now: float) -> None:
    if not events:
        return
    where = f"{socket.gethostname()}:{folder}"
    with (folder / HISTORY_FILE).open("a") as history:
        for event in events:
            history.write(json.dumps({"ts": now, "where": where, **event}, sort_keys=True) + "\n")


def read_history(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line torn by a crash while it was written
            continue
    return events


def live_workers(folder: Path, now: float, stale_s: float) -> list[dict[str, Any]]:
    """Reports of workers that wrote within `stale_s` seconds (a dead worker's file is left)."""
    reports = []
    for path in (folder / WORKERS_DIR).glob("*.json"):
        report = read_json(path)
        if report and now - report.get("heartbeat", 0) <= stale_s:
            reports.append(report)
    return reports
