"""The instance a deployment with overlapping runs needs: Dagster's runs, events and schedules in
a real PostgreSQL server (Debian's, started by .ci/run), with the package's `postgres` extra."""

import os
import subprocess

import dagster as dg
import pytest
import yaml

from tests.conftest import graph_run_config, postgres_dagster_home, write_tweeteval
from tests.integration import test_lineage
from tests.processes import BIN, ROOT


@pytest.fixture
def postgres_instance(postgres_url, tmp_path):
    home = postgres_dagster_home(tmp_path / "dagster_home", postgres_url)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def test_the_instance_is_stored_in_postgres(postgres_instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(postgres_instance.run_storage, PostgresRunStorage)
    assert isinstance(postgres_instance.event_log_storage, PostgresEventLogStorage)


def test_overlapping_runs_keep_their_own_lineage_on_postgres(
    store, postgres_instance, tmp_path, monkeypatch, model_store_at
):
    model_store_at(tmp_path / "bentoml")  # its approval must not become other tests' champion
    source = write_tweeteval(tmp_path / "data", sizes=(120, 40, 40))
    test_lineage.test_a_run_scores_and_approves_its_model_on_its_own_splits_while_another_run_moves_them(
        store, postgres_instance, source, monkeypatch
    )


@pytest.mark.slow  # the whole graph from the command line; .ci/run runs the slow tests
def test_the_pipeline_job_runs_on_a_postgres_instance(postgres_url, tmp_path):
    home = postgres_dagster_home(tmp_path / "dagster_home", postgres_url)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(graph_run_config(write_tweeteval(tmp_path / "data"))))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TEXTOPS_HOME": str(tmp_path / "store"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "TEXTOPS_SERVING_LOG": "off",
    }
    result = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "orchestration.definitions",
         "-j", "pipeline", "-c", str(config)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        (run,) = instance.get_runs(filters=dg.RunsFilter(job_name="pipeline"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        bento = instance.get_latest_materialization_event(dg.AssetKey("bento"))
        assert bento is not None and bento.run_id == run.run_id
    finally:
        instance.dispose()


def test_the_definitions_load_with_the_kubernetes_executor(tmp_path):
    from dagster_k8s import k8s_job_executor

    from orchestration.definitions import executor_for

    assert executor_for("k8s") is k8s_job_executor
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path), "TEXTOPS_EXECUTOR": "k8s"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout
