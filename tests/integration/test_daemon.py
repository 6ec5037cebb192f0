"""A real Dagster daemon: a labelled file dropped into the landing folder leads to exactly one
successful `retrain` run whose raw_texts includes the file."""

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
        "TEXTOPS_RETRAIN_CONFIG": str(retrain),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "TEXTOPS_SERVING_LOG": "off",
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }


def wait_for_runs(instance: dg.DagsterInstance, deadline: float) -> list:
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"textops/trigger": "new-data"}))
        if runs and all(run.is_finished for run in runs):
            return runs
        time.sleep(3)
    raise TimeoutError("no finished retrain run within the time limit")


def test_landed_file_triggers_exactly_one_retrain_run(daemon_env, tmp_path):
    # Turn the sensor on (which also creates the SQLite instance) before the daemon starts:
    # two processes creating the same SQLite schema at once collide.
    started = subprocess.run(
        [str(BIN / "dagster"), "sensor", "start", "-w", "workspace.yaml", "new_data_sensor"],
        cwd=ROOT,
        env=daemon_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    with running(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        daemon_env,
        tmp_path / "dagster-daemon.log",
    ):
        pl.DataFrame(
            {
                "text": ["@user a landed wonderful day", "@user a landed awful day"],
                "label": ["positive", "negative"],
            }
        ).write_csv(Path(daemon_env["TEXTOPS_LANDING"]) / "landed.csv")
        instance = dg.DagsterInstance.from_config(daemon_env["DAGSTER_HOME"])
        runs = wait_for_runs(instance, time.monotonic() + 900)
        time.sleep(35)  # another sensor tick: the same file must not launch a second run
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"textops/trigger": "new-data"}))
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
