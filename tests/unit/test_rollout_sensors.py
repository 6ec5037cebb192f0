"""The Dagster side of a rollout: the services' events as observations of served_model, and a new
model that regresses live (or drifts) in its first hours rolled back by a tagged run."""

import time

import dagster as dg

from orchestration import definitions
from orchestration.rollout_sensors import live_model_sensor, regression_sensor
from textops_core.rollout import append_history, empty_state, write_json


def sensor(name: str) -> dg.SensorDefinition:
    return next(s for s in definitions.SENSORS if s.name == name)


def test_every_rollout_event_becomes_one_observation_of_served_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTOPS_ROLLOUT_DIR", str(tmp_path))
    now = time.time()
    shadow = {"requests": 500, "errors": 0, "p95_ms": 7.5, "live_p95_ms": 6.0, "agreement": 0.97}
    append_history(tmp_path, [{"event": "loading", "tag": "m:2", "kind": "new"}], now - 2)
    append_history(
        tmp_path,
        [{"event": "live", "tag": "m:2", "previous": "m:1", "reason": "shadow on 500 requests",
          "shadow": shadow, "approval_to_live_s": 31.0}],
        now - 1,
    )  # fmt: skip
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        result = live_model_sensor()(context)
        observations = result.asset_events
        assert [o.asset_key for o in observations] == [dg.AssetKey("served_model")] * 2
        live = observations[1].metadata
        assert live["event"].value == "live" and live["live_tag"].value == "m:2"
        assert live["previous"].value == "m:1"
        assert live["shadow_p95_ms"].value == 7.5 and live["approval_to_live_s"].value == 31.0
        assert str(tmp_path) in live["where"].value
        # the next tick reports only what happened since
        again = live_model_sensor()(
            dg.build_sensor_context(instance=instance, cursor=result.cursor)
        )
        assert isinstance(again, dg.SkipReason)


def test_a_regression_or_a_drift_alarm_in_the_first_hours_launches_a_tagged_rollback(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TEXTOPS_ROLLOUT_DIR", str(tmp_path))
    now = time.time()
    reason = "live regression in its first 2 h: p95 latency 900 ms over the 300 ms SLO"
    append_history(tmp_path, [{"event": "regression", "tag": "m:2", "reason": reason}], now)
    regression = sensor("regression_sensor")
    assert regression.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        result = regression(dg.build_sensor_context(instance=instance))
        (request,) = result.run_requests
        assert request.run_key == "rollback-m:2"
        assert request.tags["textops/trigger"] == "regression"
        assert request.run_config == {
            "tag": "m:2",
            "reason": reason,
            "by": "textops (live regression)",
        }
        assert request.job_name in (None, "rollback")
        cursor = result.cursor

        # a drift alarm on the model live since a minute ago, a new model: rolled back too
        state = empty_state("m:3", now - 60, "shadow")
        state["live"]["kind"] = "new"
        write_json(tmp_path / "state.json", state)
        instance.report_runless_asset_event(
            dg.AssetMaterialization("drift_report", metadata={"drifted": True, "model_tag": "m:3"})
        )
        result = regression(dg.build_sensor_context(instance=instance, cursor=cursor))
        (request,) = result.run_requests
        assert request.tags["textops/trigger"] == "drift" and request.run_config["tag"] == "m:3"
        # the same alarm is not acted on twice, and an old model's drift is retraining's business
        assert not regression(
            dg.build_sensor_context(instance=instance, cursor=result.cursor)
        ).run_requests
        state["live"]["since"] = now - 3 * 3600
        write_json(tmp_path / "state.json", state)
        instance.report_runless_asset_event(
            dg.AssetMaterialization("drift_report", metadata={"drifted": True, "model_tag": "m:3"})
        )
        assert not regression(
            dg.build_sensor_context(instance=instance, cursor=result.cursor)
        ).run_requests


def test_regression_sensor_is_one_switch(monkeypatch):
    monkeypatch.setenv("TEXTOPS_AUTOMATION", "off")
    from orchestration.automation import REGRESSION, sensor_status

    off = regression_sensor(definitions.rollback_job, sensor_status(REGRESSION))
    assert off.default_status == dg.DefaultSensorStatus.STOPPED
