"""A new user's first click: "Materialize all" on a fresh instance, with no network source set
and no traffic served yet, goes green."""

import dagster as dg

from orchestration import definitions
from tests.conftest import GRAPH_TRAIN
from tests.integration.test_data_assets import failure_message


def test_materialize_all_on_a_fresh_deployment(store, tmp_path, monkeypatch, model_store_at):
    monkeypatch.delenv("TEXTOPS_SOURCE", raising=False)  # the default: the shipped dataset
    # a fresh deployment: an empty model store too (here and in the bento build's subprocess)
    monkeypatch.setenv("BENTOML_HOME", str(model_store_at(tmp_path / "bentoml")))
    monkeypatch.setenv("TEXTOPS_SERVING_LOG", str(tmp_path / "never-served"))
    run_config = {
        "ops": {
            "raw_texts": {"config": {"max_rows_per_split": 100}},
            "fine_tuned_model": {"config": {**GRAPH_TRAIN, "max_steps": 10}},
            "evaluation_report": {"config": {"latency_samples": 4, "bootstrap_resamples": 200}},
            "approved_model": {"config": {"absolute_floor": 0.0, "must_beat_baseline": False}},
        }
    }
    result = dg.materialize(
        [*definitions.ASSETS, *definitions.ASSET_CHECKS],
        resources=definitions.pipeline_resources(store),
        run_config=run_config,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success, failure_message(result)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {a.key.to_user_string() for a in definitions.ASSETS}
    raw = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert raw["source_uri"].value == "embedded:tweeteval/hate"
    log = result.asset_materializations_for_node("serving_log")[0].metadata
    assert log["predictions"].value == 0
    assert "has not logged anything yet" in log["note"].value
    drift = result.asset_materializations_for_node("drift_report")[0].metadata
    assert drift["drifted"].value is False and drift["judged"].value is False
    assert "not enough traffic yet" in drift["report"].value
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["drift_check"] is True and checks["latency_slo"] is True
