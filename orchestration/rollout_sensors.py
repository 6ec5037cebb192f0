"""What the running services did, in Dagster: every rollout event a deployment recorded (a model
live, a candidate in shadow, rejected, a live regression) becomes an observation of
`served_model`, so the UI shows which model is live, where, since when, and what its shadow
measured; and a new model that regresses live in its first hours (the service's own numbers, or a
drift alarm on it) is rolled back by a `rollback` run tagged with its trigger."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg

from textops_core.rollout import read_history, read_state
from textops_core.settings import ServiceSettings, env_field

SERVED_MODEL = dg.AssetKey("served_model")
DRIFT_REPORT = dg.AssetKey("drift_report")
ROLLED_BACK_BY = "textops (live regression)"


def rollout_folders() -> list[Path]:
    """The deployments' rollout folders: $TEXTOPS_ROLLOUT_DIR, else every deployment under the
    BentoML home's textops-rollout/."""
    if folder := os.environ.get("TEXTOPS_ROLLOUT_DIR", "").strip():
        return [Path(folder)]
    from textops_core.registry import bentoml_home

    root = bentoml_home() / "textops-rollout"
    return sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []


def new_events(cursor: str | None) -> tuple[list[dict[str, Any]], str]:
    """Events recorded since the cursor in every rollout folder, oldest first, and the cursor."""
    seen: dict[str, float] = json.loads(cursor) if cursor else {}
    events = []
    for folder in rollout_folders():
        last = seen.get(str(folder), 0.0)
        fresh = [e for e in read_history(folder) if e.get("ts", 0) > last]
        if fresh:
            seen[str(folder)] = max(e["ts"] for e in fresh)
            events += [{**e, "folder": str(folder)} for e in fresh]
    return sorted(events, key=lambda e: e["ts"]), json.dumps(seen, sort_keys=True)


def observation(event: dict[str, Any]) -> dg.AssetObservation:
    shadow = event.get("shadow") or {}
    numbers = {
        f"shadow_{key}": float(shadow[key])
        for key in ("requests", "errors", "error_rate", "p95_ms", "live_p95_ms", "label_shift",
                    "agreement")
        if shadow.get(key) is not None
    }  # fmt: skip
    if event.get("approval_to_live_s") is not None:
        numbers["approval_to_live_s"] = float(event["approval_to_live_s"])
    live = event["tag"] if event["event"] == "live" else None
    previous = event.get("previous")
    return dg.AssetObservation(
        asset_key=SERVED_MODEL,
        metadata={
            "event": dg.MetadataValue.text(event["event"]),
            "tag": dg.MetadataValue.text(event["tag"]),
            **({"live_tag": dg.MetadataValue.text(live)} if live else {}),
            "where": dg.MetadataValue.text(event.get("where", event["folder"])),
            "at": dg.MetadataValue.timestamp(event["ts"]),
            "reason": dg.MetadataValue.text(str(event.get("reason", ""))),
            **({"previous": dg.MetadataValue.text(previous)} if previous else {}),
            **({"shadow": dg.MetadataValue.json(shadow)} if shadow else {}),
            **numbers,
        },
    )  # fmt: skip


def live_model_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="live_model_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records what the running services did (a model live, a shadow's numbers, a "
        "rejection, a regression) as observations of served_model; it only reads their rollout "
        "folders",
    )
    def sensor(context: dg.SensorEvaluationContext):
        events, cursor = new_events(context.cursor)
        if not events:
            return dg.SkipReason("no rollout event since the last tick")
        return dg.SensorResult(asset_events=[observation(e) for e in events], cursor=cursor)

    return sensor


def regressions(
    events: list[dict[str, Any]], drifted: str | None, now: float, probation_hours: float
) -> list[tuple[str, str, str]]:
    """(tag, reason, trigger) of live models to roll back: those a service recorded as regressing,
    and the one a drift alarm names when it went live as a new model less than
    `probation_hours` ago."""
    found = [(e["tag"], e["reason"], "regression") for e in events if e["event"] == "regression"]
    if drifted:
        for folder in rollout_folders():
            live = (read_state(folder) or {}).get("live", {})
            if (
                live.get("tag") == drifted
                and live.get("kind") == "new"
                and now - live.get("since", 0) < probation_hours * 3600
            ):
                found.append((drifted, "drift alarm in its first hours live", "drift"))
    return found


def regression_sensor(job, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    @dg.sensor(
        name="regression_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=status,
        description="Rolls back a new model that regresses live in its first hours "
        "($TEXTOPS_PROBATION_HOURS, 2 h): a service recorded errors or p95 latency over the "
        "SLO, or a drift alarm names it. Runs `rollback`, tagged textops/trigger",
    )
    def sensor(context: dg.SensorEvaluationContext):
        state = json.loads(context.cursor) if context.cursor else {}
        events, state["history"] = new_events(state.get("history"))
        drifted = None
        record = context.instance.get_latest_materialization_event(DRIFT_REPORT)
        if record is not None and record.asset_materialization is not None:
            metadata = record.asset_materialization.metadata
            if record.timestamp > state.get("drift_ts", 0) and metadata.get("drifted"):
                state["drift_ts"] = record.timestamp
                if metadata["drifted"].value and "model_tag" in metadata:
                    drifted = metadata["model_tag"].value
        hours = env_field(ServiceSettings, "probation_hours")
        requests = [
            dg.RunRequest(
                run_key=f"rollback-{tag}",  # one rollback per model, whatever noticed it
                run_config={"tag": tag, "reason": reason, "by": ROLLED_BACK_BY},
                tags={"textops/trigger": trigger, "textops/rolled_back": tag[:200]},
            )
            for tag, reason, trigger in regressions(events, drifted, time.time(), hours)
        ]
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True))

    return sensor
