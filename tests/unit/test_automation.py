import dagster as dg
import pytest

from orchestration import automation, definitions


def sensor_named(name):
    return next(s for s in definitions.SENSORS if s.name == name)


def evaluate(sensor, cursor=None):
    context = dg.build_sensor_context(cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result, context.cursor


def test_new_data_sensor_runs_once_per_set_of_new_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTOPS_LANDING", str(tmp_path))
    sensor = sensor_named("new_data_sensor")

    nothing, cursor = evaluate(sensor)
    assert not nothing.run_requests
    assert f"no new files in {tmp_path}" in nothing.skip_message

    (tmp_path / "batch1.csv").write_text("text,label\nhello,0\n")
    first, cursor = evaluate(sensor, cursor)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.tags["textops/files"] == "batch1.csv"
    assert request.tags["textops/trigger"] == "new-data"

    again, cursor = evaluate(sensor, cursor)  # the same file twice: nothing to do
    assert not again.run_requests and "no new files" in again.skip_message

    (tmp_path / "batch2.jsonl").write_text('{"text": "x", "label": 1}\n')
    (tmp_path / "notes.txt").write_text("not a data file")
    second, cursor = evaluate(sensor, cursor)
    assert [r.tags["textops/files"] for r in second.run_requests] == ["batch2.jsonl"]
    assert second.run_requests[0].run_key != request.run_key

    (tmp_path / "batch1.csv").write_text("text,label\nhello,0\nbye,1\n")  # changed content
    changed, _ = evaluate(sensor, cursor)
    assert [r.tags["textops/files"] for r in changed.run_requests] == ["batch1.csv"]


def test_same_files_give_the_same_run_key_so_dagster_never_runs_them_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTOPS_LANDING", str(tmp_path))
    (tmp_path / "a.csv").write_text("text,label\nhello,0\n")
    sensor = sensor_named("new_data_sensor")
    one, _ = evaluate(sensor)
    two, _ = evaluate(sensor)  # a lost cursor: the run key still dedups the run
    assert one.run_requests[0].run_key == two.run_requests[0].run_key


def test_drift_sensor_requests_retrain_only_on_drift():
    @dg.asset(name="drift_report")
    def fake_drift_report(context) -> dg.MaterializeResult:
        drifted = context.run.tags.get("drift") == "yes"
        return dg.MaterializeResult(
            metadata={
                "drifted": drifted,
                "reasons": dg.MetadataValue.json(["length_psi"] if drifted else []),
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
    assert sensor.job_name == "retrain"
    repeat, _ = tick(cursor)
    assert not repeat.run_requests  # one run per report


def test_schedule_is_weekly_and_off_until_turned_on():
    schedule = definitions.SCHEDULES[0]
    assert schedule.cron_schedule == automation.DEFAULT_CRON
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "retrain"


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
