"""Landed files, the serving log and the drift report on a real (tiny) model."""

import json

import dagster as dg
import polars as pl

from assets.interfaces.manifests import TextSplitsManifest
from bento.serving_log import ServingLog
from orchestration.definitions import pipeline_resources
from tests.conftest import latest_manifest, materialize_selected, tiny_rows, write_tweeteval
from tests.integration.test_data_assets import DATA_ASSETS, failure_message, materialize_data


def test_landed_file_joins_train_and_changes_the_data_version(store, tmp_path, monkeypatch):
    source = write_tweeteval(tmp_path / "source")
    before = materialize_data(store, source)
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("TEXTOPS_LANDING", str(landing))
    pl.DataFrame(
        {
            "text": ["a brand new wonderful tweet", "a brand new horrible tweet"],
            "label": ["positive", "negative"],
        }
    ).write_csv(landing / "new.csv")
    after = materialize_data(store, source)
    assert after.success
    meta = after.asset_materializations_for_node("raw_texts")[0].metadata
    assert meta["rows_per_split"].value["train"] == 42
    assert [f["file"] for f in meta["landed_files"].value] == ["new.csv"]
    version = lambda r: r.asset_materializations_for_node("raw_texts")[0].tags[  # noqa: E731
        "dagster/data_version"
    ]
    assert version(after) != version(before)
    train = store.read_parquet(after.output_for_node("text_splits").paths["train"])
    assert "a brand new horrible tweet" in train["text"].to_list()


def test_corrupt_landed_file_stops_the_run(store, instance, tmp_path, monkeypatch):
    source = write_tweeteval(tmp_path / "source")
    assert materialize_data(store, source, instance).success
    good = latest_manifest(instance, store, "text_splits", TextSplitsManifest)
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("TEXTOPS_LANDING", str(landing))
    (landing / "bad.csv").write_text("text,label\nhello,spam\n")
    result = materialize_data(store, source, instance)
    assert not result.success
    assert "bad.csv: labels ['spam'] are not in the label set" in failure_message(result)
    assert latest_manifest(instance, store, "text_splits", TextSplitsManifest) == good


def test_empty_texts_in_a_landed_file_stop_the_run_at_a_blocking_check(
    store, tmp_path, monkeypatch
):
    source = write_tweeteval(tmp_path / "source")
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("TEXTOPS_LANDING", str(landing))
    pl.DataFrame({"text": [""] * 10, "label": [0] * 10}).write_csv(landing / "blank.csv")
    result = dg.materialize(
        DATA_ASSETS,
        resources=pipeline_resources(store),
        raise_on_error=False,
        run_config={"ops": {"raw_texts": {"config": {"source": str(source)}}}},
    )
    assert not result.success
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations["empty_text_share"] is False
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "raw_texts"
    }


def monitor(approved_graph, log_dir):
    return materialize_selected(
        approved_graph["store"],
        ["serving_log", "drift_report"],
        run_config={
            "ops": {
                "serving_log": {"config": {"log_dir": str(log_dir)}},
                "drift_report": {"config": {"min_predictions": 20, "embedding_sample": 32}},
            }
        },
        raise_on_error=False,
        instance=approved_graph["instance"],
    )


def write_log(folder, texts, labels, model_tag):
    log = ServingLog(folder)
    for text, label in zip(texts, labels, strict=True):
        log.append(model_tag, [text], [label], [{"positive": 0.5, "negative": 0.5}], 5.0)


def test_drift_report_on_traffic_like_training(approved_graph, tmp_path):
    rows = tiny_rows(160)  # the training texts themselves: the same distribution
    write_log(
        tmp_path / "calm",
        [t for t, _ in rows],
        ["positive" if y == 0 else "negative" for _, y in rows],
        approved_graph["tag"],
    )
    result = monitor(approved_graph, tmp_path / "calm")
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("drift_report")[0].metadata
    assert meta["drifted"].value is False, meta["findings"].value
    check = result.get_asset_check_evaluations()[0]
    assert check.passed


def test_drift_report_on_shifted_traffic(approved_graph, tmp_path):
    shifted = [f"LONG RANT {i}: " + " ".join(["ωμέγα 東京 ℵ∞"] * 12) for i in range(80)]
    write_log(tmp_path / "shifted", shifted, ["negative"] * 80, approved_graph["tag"])
    result = monitor(approved_graph, tmp_path / "shifted")
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("drift_report")[0].metadata
    assert meta["drifted"].value is True
    assert {"length_psi", "label_mix_chi2", "unknown_token_share"} <= set(meta["reasons"].value)
    assert "drift detected" in meta["report"].value
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    report = approved_graph["store"].read_json(result.output_for_node("drift_report").path)
    assert report["drifted"] and json.dumps(report)
