"""The GCS artifact store and gs:// sources against the emulator."""

import dagster as dg
import polars as pl
import pytest

from assets.data.sources.formats import SourceError
from assets.data.sources.transports import read_source
from assets.interfaces.errors import MissingArtifactError
from orchestration import definitions
from tests.conftest import GRAPH_TRAIN, materialize_selected, write_tweeteval


def gcs_client():
    """A client of the emulator (no credentials needed there)."""
    import os

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=os.environ["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials()
    )


def upload_folder(bucket: str, prefix: str, folder) -> str:
    client = gcs_client()
    for path in folder.iterdir():
        client.bucket(bucket).blob(f"{prefix}/{path.name}").upload_from_filename(str(path))
    return f"gs://{bucket}/{prefix}"


def test_store_round_trip(gcs_store, tmp_path):
    frame = pl.DataFrame({"text": ["a"], "label": [0]})
    gcs_store.write_parquet("x/v1/data.parquet", frame)
    assert gcs_store.read_parquet("x/v1/data.parquet").equals(frame)
    with pytest.raises(MissingArtifactError):
        gcs_store.read_parquet("x/v2/data.parquet")
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(b"w")
    (folder / "sub" / "config.json").write_text("{}")
    gcs_store.upload_dir("model/v1", folder)
    local = gcs_store.local_dir("model/v1")
    assert (local / "sub" / "config.json").read_text() == "{}"
    assert gcs_store.uri("model/v1").startswith("gs://textops-test/t/")
    assert gcs_store.children("model") == ["v1"]
    assert gcs_store.children("model/v1") == ["sub", "weights.safetensors"]
    assert gcs_store.children("absent") == []
    gcs_store.delete("model/v1")
    with pytest.raises(MissingArtifactError):
        gcs_store.local_dir("model/v1")


def test_gs_sources_in_every_layout(gcs_emulator, tmp_path):
    uri = upload_folder(gcs_emulator["bucket"], "sources/hate", write_tweeteval(tmp_path / "d"))
    source = read_source(uri, tmp_path / "cache", lambda m: None)
    assert source.frame.height == 64
    gcs_client().bucket(gcs_emulator["bucket"]).blob("sources/t.csv").upload_from_string(
        "text,label\nhi,a\nho,b\n"
    )
    table = read_source(f"gs://{gcs_emulator['bucket']}/sources/t.csv", tmp_path, print)
    assert table.label_names == ["a", "b"]
    with pytest.raises(SourceError, match="missing split file"):
        read_source(f"gs://{gcs_emulator['bucket']}/sources/none", tmp_path, print)


def test_graph_through_evaluation_on_gcs(gcs_store, gcs_emulator, tmp_path):
    uri = upload_folder(
        gcs_emulator["bucket"], "sources/small", write_tweeteval(tmp_path / "d", sizes=(80, 24, 24))
    )
    result = materialize_selected(
        gcs_store,
        ["raw_texts", "text_splits", "fine_tuned_model", "evaluation_report"],
        run_config={
            "ops": {
                "raw_texts": {"config": {"source": uri}},
                "fine_tuned_model": {"config": {**GRAPH_TRAIN, "max_steps": 6}},
                "evaluation_report": {"config": {"latency_samples": 2}},
            }
        },
    )
    assert result.success
    report = result.output_for_node("evaluation_report")
    assert gcs_store.read_json(f"{report.path}/report.json")["test_rows"] == 24
    assert (
        result.asset_materializations_for_node("evaluation_report")[0]
        .metadata["manifest"]
        .value.startswith("gs://textops-test/")
    )
    meta = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert meta["source_uri"].value == uri
    assert meta["path"].value.startswith("gs://textops-test/")


def test_sensor_finds_files_landed_in_the_bucket(gcs_emulator, monkeypatch):
    """One listing of the prefix per tick, no download; a re-upload is a new generation."""
    import time

    from assets.data.sources.landing import landed_files
    from assets.locations import location as path_of

    bucket = gcs_client().bucket(gcs_emulator["bucket"])
    location = f"gs://{gcs_emulator['bucket']}/landing"
    monkeypatch.setenv("TEXTOPS_LANDING", location)
    monkeypatch.setenv("TEXTOPS_LANDING_SETTLE_S", "0.2")
    sensor = next(s for s in definitions.SENSORS if s.name == "new_data_sensor")
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor=None):
        result = sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, instance=instance))
        return result, result.cursor

    assert landed_files(location) == []
    bucket.blob("landing/new.csv").upload_from_string("text,label\nhello,positive\n")
    bucket.blob("landing/deeper/other.csv").upload_from_string("text,label\nx,positive\n")
    bucket.blob("landing/_SUCCESS").upload_from_string("")

    def no_download(*args, **kwargs):
        raise AssertionError("a landed file was downloaded")

    filesystem = type(path_of(location).fs)
    monkeypatch.setattr(filesystem, "_open", no_download)
    monkeypatch.setattr(filesystem, "_cat_file", no_download)
    (listed,) = landed_files(location)
    assert (listed.name, listed.size) == ("new.csv", 26)
    assert listed.version.startswith("generation:")
    with pytest.raises(AssertionError, match="downloaded"):
        listed.read()  # the guard works: reading is what raw_texts does, later
    first, cursor = tick()
    assert not first.run_requests and "new.csv" in first.skip_message
    time.sleep(0.3)
    ready, cursor = tick(cursor)
    assert [r.tags["textops/files"] for r in ready.run_requests] == ["new.csv"]
    assert not tick(cursor)[0].run_requests  # seen: nothing new

    bucket.blob("landing/new.csv").upload_from_string("text,label\nhello,positive\n")
    _, cursor = tick(cursor)
    time.sleep(0.3)
    again, _ = tick(cursor)
    assert [r.tags["textops/files"] for r in again.run_requests] == ["new.csv"]
    assert again.run_requests[0].run_key != ready.run_requests[0].run_key


def test_serving_log_read_from_the_bucket(gcs_emulator):
    from assets.monitoring.log_window import read_serving_log

    bucket = gcs_client().bucket(gcs_emulator["bucket"])
    record = '{"ts": 1.0, "model_tag": "m:1", "text": "hi", "text_length": 2, "label": "a", '
    record += '"probabilities": {"a": 1.0}, "latency_ms": 3.0}\n'
    bucket.blob("logs/predictions-2026112500-1.jsonl").upload_from_string(record * 2 + "{torn")
    frame, torn = read_serving_log(f"gs://{gcs_emulator['bucket']}/logs")
    assert frame.height == 2 and torn == 1


def test_a_window_of_a_bucket_log_downloads_only_its_hours(gcs_emulator):
    import json
    from datetime import UTC, datetime

    from assets.monitoring.log_window import read_window

    bucket = gcs_client().bucket(gcs_emulator["bucket"])
    now = datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp()
    for hours_ago in (0, 1, 30 * 24):
        ts = now - hours_ago * 3600
        name = f"predictions-{datetime.fromtimestamp(ts, UTC):%Y%m%d%H}-pod-a-7-abc123.jsonl"
        record = {"ts": ts, "model_tag": "m:1", "text_length": 2, "label": "a", "latency_ms": 3.0}
        bucket.blob(f"window/{name}").upload_from_string(json.dumps(record) + "\n")
    read = read_window(f"gs://{gcs_emulator['bucket']}/window", now - 2 * 3600)
    assert read.files == 2 and read.frame.height == 2


def test_the_gcp_environment_resolves_its_bucket_and_prefix_when_a_run_starts(
    gcs_emulator, monkeypatch
):
    """TEXTOPS_ENV=gcp: the store's bucket and prefix are EnvVars, read when the resource is
    built for a run, and what it writes lands there."""
    monkeypatch.setenv("TEXTOPS_GCS_BUCKET", gcs_emulator["bucket"])
    monkeypatch.setenv("TEXTOPS_GCS_PREFIX", "t/from-env")
    store = definitions.resources_for("gcp")["store"]
    with dg.build_resources({"store": store}) as built:
        built.store.write_json("probe/v1.json", {"ok": True})
        assert (
            built.store.uri("probe/v1.json")
            == f"gs://{gcs_emulator['bucket']}/t/from-env/probe/v1.json"
        )
    blob = gcs_client().bucket(gcs_emulator["bucket"]).blob("t/from-env/probe/v1.json")
    assert blob.exists()
