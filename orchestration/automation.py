"""What runs by itself: monitoring on a cron (declarative automation on serving_log and
drift_report), and retraining by schedule, by new labelled data and by drift.

Each is one switch in the UI's Automation page. Which ones start switched on is
$TEXTOPS_AUTOMATION: `monitoring` (the default: monitoring only reads the prediction log and
writes reports, and regression_sensor only rolls a regressing new model back to the model approved
before it, so both are safe everywhere), `all` (the whole loop, for a deployment left to run by
itself), `off`, or a comma-separated list of names among monitoring_automation,
retrain_schedule, new_data_sensor, drift_sensor. A switch flipped in the UI wins over it."""

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from assets.data.raw import landing_location
from assets.data.sources.landing import MAX_BYTES_ENV as LANDING_MAX_BYTES_ENV
from assets.data.sources.landing import LandedFile, landed_files, landing_max_bytes
from assets.settings import setting
from textops_core.settings import variable

AUTOMATION_ENV = variable("automation")
MONITORING = "monitoring_automation"
REGRESSION = "regression_sensor"
SWITCHES = (MONITORING, REGRESSION, "retrain_schedule", "new_data_sensor", "drift_sensor")
# rolling back a regressing new model only ever returns to a model that was approved before
PRESETS = {"monitoring": {MONITORING, REGRESSION}, "all": set(SWITCHES), "off": set()}
LANDING_SETTLE_ENV = variable("landing_settle_s")
LANDING_CURSOR_FORMAT = 2


def switched_on() -> set[str]:
    """The automation that starts switched on ($TEXTOPS_AUTOMATION)."""
    value = setting("automation")
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


def valid_cron(field: str, example: str) -> str:
    """The cron expression of setting `field`, checked as Dagster reads it."""
    cron = setting(field)
    try:
        dg.AutomationCondition.cron_tick_passed(cron)
    except Exception:
        raise ValueError(
            f"{variable(field)}={cron!r} is not a valid cron expression: use five fields, e.g. "
            f"{example}"
        ) from None
    return cron


def retrain_run_config() -> dict:
    """Default run config of `retrain`: the YAML file at $TEXTOPS_RETRAIN_CONFIG, if set."""
    path = setting("retrain_config")
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
    cron = valid_cron("retrain_cron", "'0 3 * * 1' for Mondays at 03:00")
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
    cron = valid_cron("monitor_cron", "'0 * * * *' for hourly")
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


def landing_settle_s() -> float:
    return setting("landing_settle_s")


@dataclass(frozen=True)
class LandingTick:
    """One look at the landing folder: the files to ingest now (name -> size and version
    stamp), the files still changing or settling, and the cursor the next tick compares with."""

    ready: dict[str, dict]
    waiting: list[str]
    cursor: dict


def upgraded_cursor(old: dict, files: list[LandedFile]) -> dict:
    """The first cursor format (name -> size and sha256 of the content) as seen files: a file
    still of the recorded size is taken as the one already ingested (the sensor no longer reads
    content to compare checksums, and re-ingesting the whole folder on upgrade would retrain
    on data already trained on); one of another size was replaced and goes through settling."""
    seen = {}
    for file in files:
        entry = old.get(file.name)
        if isinstance(entry, dict) and entry.get("size") == file.size:
            seen[file.name] = {"size": file.size, "version": file.version}
    return {"format": LANDING_CURSOR_FORMAT, "seen": seen, "pending": {}}


def landing_tick(files: list[LandedFile], cursor: dict, now: float, settle_s: float) -> LandingTick:
    """Which listed files are ready: new or replaced since the cursor, and settled, i.e. the
    same size and version stamp on an earlier tick at least `settle_s` ago (by this clock).

    A file still being copied keeps growing or getting a new mtime, so it never looks the
    same across `settle_s`; an upload to a bucket appears whole, and waiting costs it only the
    settle time. The age is measured from when the sensor first saw this version, not from the
    file's mtime: the writer's or the bucket's clock may be off from the daemon's. The cursor
    holds only what is listed now, so it stays the size of the folder."""
    if cursor and "format" not in cursor:
        cursor = upgraded_cursor(cursor, files)
    seen, pending = cursor.get("seen", {}), cursor.get("pending", {})
    next_seen: dict[str, dict] = {}
    next_pending: dict[str, dict] = {}
    ready: dict[str, dict] = {}
    for file in files:
        state = {"size": file.size, "version": file.version}
        if seen.get(file.name) == state:
            next_seen[file.name] = state
            continue
        before = pending.get(file.name, {})
        unchanged = {"size": before.get("size"), "version": before.get("version")} == state
        since = float(before["since"]) if unchanged else now
        if unchanged and now - since >= settle_s:
            ready[file.name] = next_seen[file.name] = state
        else:
            next_pending[file.name] = {**state, "since": since}
    return LandingTick(
        ready=ready,
        waiting=sorted(next_pending),
        cursor={"format": LANDING_CURSOR_FORMAT, "seen": next_seen, "pending": next_pending},
    )


def over_cap(files: list[LandedFile], cap: int) -> tuple[list[LandedFile], str]:
    """The files within the landing cap, and a sentence naming those over it ("" if none):
    raw_texts leaves those unread, so they never start a run, and say so every tick until they
    are split or the cap is raised."""
    within = [file for file in files if file.size <= cap]
    over = [f"{file.name} ({file.size:,} bytes)" for file in files if file.size > cap]
    if not over:
        return within, ""
    return within, (
        f"{len(over)} landed file(s) over the cap of {cap:,} bytes ({LANDING_MAX_BYTES_ENV}) "
        f"are not ingested: {', '.join(over)[:1000]}"
    )


def new_data_sensor(job) -> dg.SensorDefinition:
    configured = landing_settle_s()  # a bad value fails when the definitions load, not per tick
    landing_max_bytes()

    @dg.sensor(
        name="new_data_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=sensor_status("new_data_sensor"),
        description="Retrains when labelled files land in the landing folder, once each has "
        f"stopped changing for {configured:g} s (${LANDING_SETTLE_ENV}); lists names, sizes "
        "and modification stamps only, never content",
    )
    def sensor(context: dg.SensorEvaluationContext):
        location = landing_location()
        settle_s = landing_settle_s()
        cursor = json.loads(context.cursor) if context.cursor else {}
        files, refused = over_cap(landed_files(location), landing_max_bytes())
        tick = landing_tick(files, cursor, time.time(), settle_s)
        next_cursor = json.dumps(tick.cursor, sort_keys=True)
        if not tick.ready:
            reason = f"no new files in {location}"
            if tick.waiting:
                reason = (
                    f"no settled new files in {location}; waiting for {len(tick.waiting)} to "
                    f"stay unchanged for {settle_s:g} s: {', '.join(tick.waiting)[:1000]}"
                )
            reason += f"; {refused}" if refused else ""
            return dg.SensorResult(skip_reason=reason, cursor=next_cursor)
        if refused:
            context.log.warning(refused)
        # the same files in the same versions give the same key, so Dagster never runs them
        # twice even if the cursor is lost; a replaced file has a new stamp, hence a new key
        run_key = hashlib.sha256(json.dumps(tick.ready, sort_keys=True).encode()).hexdigest()[:20]
        request = dg.RunRequest(
            run_key=f"new-data-{run_key}",
            tags={
                "textops/trigger": "new-data",
                "textops/files": ",".join(sorted(tick.ready))[:1000],
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=next_cursor)

    return sensor


def drift_cooldown_hours() -> float:
    return setting("drift_cooldown_hours")


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
