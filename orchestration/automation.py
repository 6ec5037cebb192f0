"""What runs by itself: monitoring on a cron (declarative automation on serving_log and
drift_report), and retraining by schedule, by new labelled data and by drift.

Each is one switch in the UI's Automation page. Which ones start switched on is
$TEXTOPS_AUTOMATION: `monitoring` (the default: monitoring only reads the prediction log and
writes reports, so it is safe everywhere), `all` (the whole loop, for a deployment left to run by
itself), `off`, or a comma-separated list of names among monitoring_automation,
retrain_schedule, new_data_sensor, drift_sensor. A switch flipped in the UI wins over it."""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import yaml

from assets.data.raw import landing_location
from assets.data.sources.landing import landed_files
from bento.settings import env_positive_float

DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00
DEFAULT_MONITOR_CRON = "0 * * * *"  # hourly
DEFAULT_DRIFT_COOLDOWN_HOURS = 24.0
AUTOMATION_ENV = "TEXTOPS_AUTOMATION"
MONITORING = "monitoring_automation"
SWITCHES = (MONITORING, "retrain_schedule", "new_data_sensor", "drift_sensor")
PRESETS = {"monitoring": {MONITORING}, "all": set(SWITCHES), "off": set()}


def switched_on() -> set[str]:
    """The automation that starts switched on ($TEXTOPS_AUTOMATION)."""
    value = os.environ.get(AUTOMATION_ENV, "").strip() or "monitoring"
    if value in PRESETS:
        return PRESETS[value]
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(SWITCHES))
    if unknown:
        raise ValueError(
            f"{AUTOMATION_ENV}={value!r}: {', '.join(unknown)} is not one of "
            f"{', '.join(PRESETS)} or a list of {', '.join(SWITCHES)}"
        )
    return names


def sensor_status(name: str) -> dg.DefaultSensorStatus:
    on = name in switched_on()
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


def valid_cron(variable: str, default: str, example: str) -> str:
    cron = os.environ.get(variable, default)
    try:
        dg.AutomationCondition.cron_tick_passed(cron)  # checks the expression as Dagster reads it
    except Exception:
        raise ValueError(
            f"{variable}={cron!r} is not a valid cron expression: use five fields, e.g. {example}"
        ) from None
    return cron


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
        # a run queue limit on this tag keeps retrains from overlapping (docs/deploy.md)
        tags={"textops/job": "retrain"},
        description="The graph from raw_texts to bento; blocking checks stop it before a bad "
        "model is trained or served.",
    )


def retrain_schedule(job) -> dg.ScheduleDefinition:
    cron = valid_cron("TEXTOPS_RETRAIN_CRON", DEFAULT_CRON, "'0 3 * * 1' for Mondays at 03:00")
    on = "retrain_schedule" in switched_on()
    return dg.ScheduleDefinition(
        name="retrain_schedule",
        job=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED,
        tags={"textops/trigger": "schedule"},
        description=f"Retrain on a schedule ({cron})",
    )


def monitoring_automation(assets: list) -> tuple[list, dg.AutomationConditionSensorDefinition]:
    """`assets` (serving_log, drift_report) materialized together on $TEXTOPS_MONITOR_CRON
    (hourly by default), and the automation sensor that runs them: one switch in the UI."""
    cron = valid_cron("TEXTOPS_MONITOR_CRON", DEFAULT_MONITOR_CRON, "'0 * * * *' for hourly")
    condition = dg.AutomationCondition.on_cron(cron)
    automated = dg.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=condition), assets
    )
    sensor = dg.AutomationConditionSensorDefinition(
        MONITORING,
        target=dg.AssetSelection.assets(*automated),
        default_status=sensor_status(MONITORING),
        run_tags={"textops/trigger": "monitoring"},
        description=f"Reads the prediction log and reports drift on a cron ({cron}); "
        "drift_sensor takes it from there",
    )
    return automated, sensor


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
        default_status=sensor_status("new_data_sensor"),
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


def drift_cooldown_hours() -> float:
    return env_positive_float("TEXTOPS_DRIFT_COOLDOWN_HOURS", DEFAULT_DRIFT_COOLDOWN_HOURS)


def drift_sensor(job) -> dg.SensorDefinition:
    @dg.asset_sensor(
        name="drift_sensor",
        asset_key=dg.AssetKey("drift_report"),
        job=job,
        default_status=sensor_status("drift_sensor"),
        description="Retrains when a new drift_report finds drift: at most once per served "
        "model per cooldown ($TEXTOPS_DRIFT_COOLDOWN_HOURS, 24 h)",
    )
    def sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        materialization = asset_event.asset_materialization
        metadata = materialization.metadata if materialization else {}
        drifted = metadata.get("drifted")
        if drifted is None or not drifted.value:
            return dg.SkipReason("the newest drift_report found no drift")
        reasons = metadata["reasons"].value if "reasons" in metadata else []
        model = metadata["model_tag"].value if "model_tag" in metadata else "unknown"
        # Hourly reports of the same drifted model would otherwise retrain every hour on the
        # same data; one run per model per cooldown window (Dagster never reruns a run key).
        window = int(asset_event.timestamp // (drift_cooldown_hours() * 3600))
        return dg.RunRequest(
            run_key=f"drift-{model}-{window}",
            tags={
                "textops/trigger": "drift",
                "textops/drift_reasons": ",".join(reasons)[:1000],
                "textops/drifted_model": model[:200],
            },
        )

    return sensor
