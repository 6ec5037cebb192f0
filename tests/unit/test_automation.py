import dagster as dg
import pytest

from assets.settings import PipelineSettings
from orchestration import automation, definitions


def sensor_named(name):
    return next(s for s in definitions.SENSORS if s.name == name)


def test_drift_sensor_requests_retrain_only_on_drift():
    @dg.asset(name="drift_report")
    def fake_drift_report(context) -> dg.MaterializeResult:
        drifted = context.run.tags.get("drift") == "yes"
        return dg.MaterializeResult(
            metadata={
                "drifted": drifted,
                "reasons": dg.MetadataValue.json(["length_psi"] if drifted else []),
                "model_tag": dg.MetadataValue.text(context.run.tags.get("model", "m:1")),
            }
        )

    instance = dg.DagsterInstance.ephemeral()
    sensor = sensor_named("drift_sensor")
    defs = dg.Definitions(assets=[fake_drift_report], jobs=[definitions.retrain], sensors=[sensor])

    def tick(cursor=None):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        return sensor.evaluate_tick(context), context.cursor

    dg.materialize([fake_drift_report], instance=instance, tags={"drift": "no"})
    calm, cursor = tick()
    assert not calm.run_requests and "no drift" in calm.skip_message
    dg.materialize([fake_drift_report], instance=instance, tags={"drift": "yes"})
    drift, cursor = tick(cursor)
    assert len(drift.run_requests) == 1
    assert drift.run_requests[0].tags["textops/drift_reasons"] == "length_psi"
    assert drift.run_requests[0].tags["textops/drifted_model"] == "m:1"
    assert sensor.job_name == "retrain"
    repeat, cursor = tick(cursor)
    assert not repeat.run_requests  # one request per report
    # the next hourly report of the same drifted model: the same run key, so Dagster launches
    # no second retrain on the same data within the cooldown
    dg.materialize([fake_drift_report], instance=instance, tags={"drift": "yes"})
    hourly, cursor = tick(cursor)
    assert hourly.run_requests[0].run_key == drift.run_requests[0].run_key
    dg.materialize([fake_drift_report], instance=instance, tags={"drift": "yes", "model": "m:2"})
    other, _ = tick(cursor)
    assert other.run_requests[0].run_key != drift.run_requests[0].run_key


def test_schedule_is_weekly_and_off_until_turned_on():
    schedule = definitions.SCHEDULES[0]
    assert schedule.cron_schedule == PipelineSettings.model_fields["retrain_cron"].default
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "retrain"


def test_monitoring_runs_by_itself_by_default_and_the_rest_is_one_switch_each(monkeypatch):
    statuses = {s.name: s.default_status for s in definitions.SENSORS}
    assert statuses == {
        "monitoring_automation": dg.DefaultSensorStatus.RUNNING,
        "new_data_sensor": dg.DefaultSensorStatus.STOPPED,
        "drift_sensor": dg.DefaultSensorStatus.STOPPED,
        "live_model_sensor": dg.DefaultSensorStatus.RUNNING,
        "regression_sensor": dg.DefaultSensorStatus.RUNNING,
    }
    monitoring = next(s for s in definitions.SENSORS if s.name == "monitoring_automation")
    assert isinstance(monitoring, dg.AutomationConditionSensorDefinition)
    for asset in definitions.MONITORING:
        (condition,) = asset.automation_conditions_by_key.values()
        assert condition.get_label() == "on_cron(0 * * * *, UTC)"
    monkeypatch.setenv("TEXTOPS_AUTOMATION", "all")
    assert automation.switched_on() == set(automation.SWITCHES)
    assert automation.retrain_schedule(definitions.retrain).default_status == (
        dg.DefaultScheduleStatus.RUNNING
    )
    assert automation.drift_sensor(definitions.retrain).default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
    monkeypatch.setenv("TEXTOPS_AUTOMATION", "off")
    _, sensor = automation.monitoring_automation([])
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv("TEXTOPS_AUTOMATION", "drift_sensor, monitoring_automation")
    assert automation.switched_on() == {"drift_sensor", "monitoring_automation"}
    monkeypatch.setenv("TEXTOPS_AUTOMATION", "everything")
    with pytest.raises(ValueError, match="'everything': everything is not one of monitoring, all"):
        automation.switched_on()


def test_monitoring_cron_setting(monkeypatch):
    monkeypatch.setenv("TEXTOPS_MONITOR_CRON", "*/5 * * * *")
    assets, _ = automation.monitoring_automation(definitions.MONITORING)
    (condition,) = assets[0].automation_conditions_by_key.values()
    assert condition.get_label() == "on_cron(*/5 * * * *, UTC)"
    monkeypatch.setenv("TEXTOPS_MONITOR_CRON", "hourly")
    with pytest.raises(ValueError, match="TEXTOPS_MONITOR_CRON='hourly' is not a valid cron"):
        automation.monitoring_automation(definitions.MONITORING)


def test_bad_cron_says_what_to_do(monkeypatch):
    monkeypatch.setenv("TEXTOPS_RETRAIN_CRON", "every monday")
    with pytest.raises(ValueError, match="not a valid cron expression: use five fields"):
        automation.retrain_schedule(definitions.retrain)


def test_retrain_config_file(tmp_path, monkeypatch):
    path = tmp_path / "retrain.yaml"
    path.write_text("ops:\n  fine_tuned_model:\n    config:\n      max_steps: 5\n")
    monkeypatch.setenv("TEXTOPS_RETRAIN_CONFIG", str(path))
    assert automation.retrain_run_config() == {
        "ops": {"fine_tuned_model": {"config": {"max_steps": 5}}}
    }
    monkeypatch.setenv("TEXTOPS_RETRAIN_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        automation.retrain_run_config()


def test_network_reading_assets_retry_and_monitoring_has_a_freshness_policy():
    from datetime import timedelta

    from assets.retries import NETWORK_RETRY

    graph = definitions.defs.resolve_asset_graph()
    for name in ("raw_texts", "serving_log"):
        assert graph.get(dg.AssetKey(name)).assets_def.op.retry_policy == NETWORK_RETRY
    assert NETWORK_RETRY.max_retries >= 1
    for name in ("serving_log", "drift_report"):
        policy = graph.get(dg.AssetKey(name)).freshness_policy
        assert policy.fail_window.to_timedelta() == timedelta(hours=24)  # the window it reads
        assert policy.warn_window.to_timedelta() == timedelta(hours=12)


@pytest.mark.parametrize("hours", [1 / 60, 0.001, 24.0, 24 * 30])
def test_any_window_gives_a_freshness_policy_dagster_accepts(hours):
    from datetime import timedelta

    from assets.monitoring.serving_log import monitoring_freshness

    policy = monitoring_freshness(hours)  # a simulated day of a minute among them
    fail, warn = policy.fail_window.to_timedelta(), policy.warn_window.to_timedelta()
    assert fail >= max(timedelta(hours=hours), timedelta(minutes=2)) and warn < fail
