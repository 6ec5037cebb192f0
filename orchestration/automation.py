"""Retraining by schedule, by new labelled data, and by drift."""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import yaml

from assets.data.raw import landing_location
from assets.data.sources.landing import landed_files

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00


def retrain_run_config() -> dict:
    """Default run config of `retrain`: the YAML file at $TEXTOPS_RETRAIN_CONFIG, if set."""
    path = os.environ.get("TEXTOPS_RETRAIN_CONFIG")
    if not path:
        return {}
    config_path = Path(path).expanduser()
    if not config_path.is_file():
        raise FileNotFoundError(f"TEXTOPS_RETRAIN_CONFIG={path} does not exist")
    return yaml.safe_load(config_path.read_text()) or {}


def retrain_job(assets: list):
    return dg.define_asset_job(
        "retrain",
        selection=dg.AssetSelection.assets(*assets),
        config=retrain_run_config() or None,
        description="The graph from raw_texts to bento; blocking checks stop it before a bad "
        "model is trained or served.",
    )


def retrain_schedule(job) -> dg.ScheduleDefinition:
    cron = os.environ.get("TEXTOPS_RETRAIN_CRON", DEFAULT_CRON)
    try:
        return dg.ScheduleDefinition(
            name="retrain_schedule",
            job=job,
            cron_schedule=cron,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            tags={"textops/trigger": "schedule"},
            description=f"Retrain on a schedule ({cron}); off until turned on in the UI",
        )
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(
            f"TEXTOPS_RETRAIN_CRON={cron!r} is not a valid cron expression: use "
            "five fields, e.g. '0 3 * * 1' for Mondays at 03:00"
        ) from None


def new_landed_files(location: str, seen: dict[str, dict]) -> dict[str, dict]:
    """Files at `location` that are new or changed since `seen` (name -> size and checksum)."""
    new = {}
    for file in landed_files(location):
        entry = {"size": file.size, "checksum": file.checksum}
        if seen.get(file.name) != entry:
            new[file.name] = entry
    return new


def new_data_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_data_sensor",
        job=job,
        minimum_interval_seconds=30,
        description="Retrains when labelled files land in the landing folder",
    )
    def sensor(context: dg.SensorEvaluationContext):
        location = landing_location()
        seen = json.loads(context.cursor) if context.cursor else {}
        new = new_landed_files(location, seen)
        if not new:
            return dg.SkipReason(f"no new files in {location}")
        run_key = hashlib.sha256(json.dumps(new, sort_keys=True).encode()).hexdigest()[:20]
        context.update_cursor(json.dumps({**seen, **new}, sort_keys=True))
        return dg.RunRequest(
            run_key=f"new-data-{run_key}",
            tags={"textops/trigger": "new-data", "textops/files": ",".join(sorted(new))[:1000]},
        )

    return sensor


def drift_sensor(job) -> dg.SensorDefinition:
    @dg.asset_sensor(
        name="drift_sensor",
        asset_key=dg.AssetKey("drift_report"),
        job=job,
        description="Retrains when a new drift_report finds drift",
    )
    def sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        materialization = asset_event.asset_materialization
        metadata = materialization.metadata if materialization else {}
        drifted = metadata.get("drifted")
        if drifted is None or not drifted.value:
            return dg.SkipReason("the newest drift_report found no drift")
        reasons = metadata["reasons"].value if "reasons" in metadata else []
        return dg.RunRequest(
            run_key=f"drift-{asset_event.run_id}",
            tags={"textops/trigger": "drift", "textops/drift_reasons": ",".join(reasons)[:1000]},
        )

    return sensor
