"""A real Dagster daemon, left alone: a labelled file dropped into the landing folder leads to
exactly one `retrain` run, and drifted traffic in the prediction log closes the loop (monitoring
runs by itself, drift_sensor requests a retrain, the gate decides, a new bento is built) with
nobody launching anything."""

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from tests.conftest import graph_run_config, write_tweeteval
from tests.processes import BIN, ROOT, running, write_dagster_yaml
from textops_core.serving_log import ServingLog


@pytest.fixture
def daemon_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    write_dagster_yaml(home)
    retrain = tmp_path / "retrain.yaml"
    retrain.write_text(yaml.safe_dump(graph_run_config(write_tweeteval(tmp_path / "data"))))
    (tmp_path / "landing").mkdir()
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TEXTOPS_HOME": str(tmp_path / "store"),
        "TEXTOPS_LANDING": str(tmp_path / "landing"),
        "TEXTOPS_LANDING_SETTLE_S": "1",  # a landed file is picked up on the tick after next
        "TEXTOPS_RETRAIN_CONFIG": str(retrain),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "TEXTOPS_SERVING_LOG": "off",
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }


def dagster(*args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "dagster"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def wait_for_runs(
    instance: dg.DagsterInstance, tags: dict[str, str], deadline: float, log: Path
) -> list:
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags=tags))
        if runs and all(run.is_finished for run in runs):
            return runs
        time.sleep(3)
    raise TimeoutError(
        f"no finished run tagged {tags} in time; daemon log:\n{log.read_text()[-3000:]}"
    )


def test_landed_file_triggers_exactly_one_retrain_run(daemon_env, tmp_path):
    # Turn the sensor on (which also creates the SQLite instance) before the daemon starts:
    # two processes creating the same SQLite schema at once collide.
    dagster("sensor", "start", "-w", "workspace.yaml", "new_data_sensor", env=daemon_env)
    log = tmp_path / "dagster-daemon.log"
    with running([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], daemon_env, log):
        pl.DataFrame(
            {
                "text": ["@user a landed wonderful day", "@user a landed awful day"],
                "label": ["positive", "negative"],
            }
        ).write_csv(Path(daemon_env["TEXTOPS_LANDING"]) / "landed.csv")
        instance = dg.DagsterInstance.from_config(daemon_env["DAGSTER_HOME"])
        trigger = {"textops/trigger": "new-data"}
        wait_for_runs(instance, trigger, time.monotonic() + 900, log)
        time.sleep(35)  # another sensor tick: the same file must not launch a second run
        runs = instance.get_runs(filters=dg.RunsFilter(tags=trigger))
        assert len(runs) == 1
        run = runs[0]
        assert run.job_name == "retrain"
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        assert run.tags["textops/files"] == "landed.csv"
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_texts"))
        assert event.run_id == run.run_id
        landed = event.asset_materialization.metadata["landed_files"].value
        assert [f["file"] for f in landed] == ["landed.csv"]
        bento = instance.get_latest_materialization_event(dg.AssetKey("bento"))
        assert bento is not None and bento.run_id == run.run_id


def latest(instance: dg.DagsterInstance, asset: str):
    return instance.get_latest_materialization_event(dg.AssetKey(asset))


@pytest.mark.slow  # minutes of a real daemon; .ci/run runs the slow tests
def test_drifted_traffic_closes_the_loop_with_nobody_launching_anything(daemon_env, tmp_path):
    log_dir = tmp_path / "serving_log"
    env = {
        **daemon_env,
        "TEXTOPS_SERVING_LOG": str(log_dir),
        # compressed time: monitoring every minute instead of every hour
        "TEXTOPS_MONITOR_CRON": "* * * * *",
        # the switches of the loop, on from the start (the rest of the automation stays off)
        "TEXTOPS_AUTOMATION": "monitoring_automation,drift_sensor",
    }
    # a served model: the README's main job, once
    dagster(
        "job", "execute", "-m", "orchestration.definitions", "-j", "pipeline",
        "-c", env["TEXTOPS_RETRAIN_CONFIG"], env=env,
    )  # fmt: skip
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    served = latest(instance, "approved_model").asset_materialization.metadata["served_tag"].value
    first_bento = latest(instance, "bento")
    # traffic the model was never trained on, as the service logs it
    writer = ServingLog(log_dir)
    for i in range(80):
        text = f"LONG RANT {i}: " + " ".join(["ωμέγα 東京 ℵ∞"] * 12)
        writer.append(served, [text], ["negative"], [{"positive": 0.1, "negative": 0.9}], 9.0)

    daemon_log = tmp_path / "dagster-daemon.log"
    with running([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, daemon_log):
        retrains = wait_for_runs(
            instance, {"textops/trigger": "drift"}, time.monotonic() + 1200, daemon_log
        )
        stopping = time.time()  # a run still being launched now is cut short, as FAILURE
    assert len(retrains) == 1
    retrain = retrains[0]
    assert retrain.job_name == "retrain" and retrain.status == dg.DagsterRunStatus.SUCCESS
    assert retrain.tags["textops/drifted_model"] == served

    # monitoring ran by itself, and its report is what the retrain answered
    monitoring = instance.get_runs(filters=dg.RunsFilter(tags={"textops/trigger": "monitoring"}))
    # one a minute: the last may have been cut short when the daemon stopped; of those that
    # ended before it was told to stop, none failed
    ended = [
        r for r in monitoring if (instance.get_run_stats(r.run_id).end_time or stopping) < stopping
    ]
    statuses = [r.status for r in ended]
    assert dg.DagsterRunStatus.SUCCESS in statuses
    assert dg.DagsterRunStatus.FAILURE not in statuses
    reports = instance.fetch_materializations(dg.AssetKey("drift_report"), limit=10).records
    drifted = [r for r in reports if r.asset_materialization.metadata["drifted"].value]
    assert drifted and {r.run_id for r in drifted} <= {r.run_id for r in monitoring}
    assert "length_psi" in drifted[-1].asset_materialization.metadata["reasons"].value

    # the retrain went through the gate and built a new bento for whatever the gate serves
    decision = latest(instance, "approved_model")
    assert decision.run_id == retrain.run_id
    bento = latest(instance, "bento")
    assert bento.run_id == retrain.run_id and bento.run_id != first_bento.run_id
    serves = decision.asset_materialization.metadata["served_tag"].value
    assert bento.asset_materialization.metadata["model_tag"].value == serves
    # and every run after the first was launched by the automation, none by hand
    launched = {r.run_id for r in instance.get_runs()} - {first_bento.run_id}
    assert launched == {r.run_id for r in [*monitoring, retrain]}
