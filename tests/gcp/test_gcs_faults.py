"""The bucket goes away in the middle of a run: a clear error, and nothing half-visible."""

import dagster as dg

from assets.data import splits as splits_module
from assets.interfaces.manifests import RawTextsManifest
from orchestration.resources.gcs_store import GcsArtifactStore
from tests.conftest import free_port, latest_manifest, materialize_selected, write_tweeteval
from tests.gcp.test_gcs_store import gcs_client, upload_folder


def start(port: int, data_dir):
    from gcp_storage_emulator.server import create_server

    server = create_server(
        "127.0.0.1", port, in_memory=False, default_bucket="faulty", data_dir=str(data_dir)
    )
    server.start()
    return server


def test_emulator_stopping_mid_run_fails_clearly_and_publishes_nothing(
    gcs_emulator, tmp_path, monkeypatch
):
    port = free_port()
    data_dir = tmp_path / "gcs-data"
    server = start(port, data_dir)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    uri = upload_folder("faulty", "sources/d", write_tweeteval(tmp_path / "d"))
    store = GcsArtifactStore(bucket="faulty", prefix="run")

    original = splits_module.build_splits

    def build_then_lose_the_bucket(raw, config):
        result = original(raw, config)
        server.stop()  # raw_texts is saved; text_splits' writes will fail
        return result

    monkeypatch.setattr(splits_module, "build_splits", build_then_lose_the_bucket)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_selected(
        store,
        ["raw_texts", "text_splits"],
        run_config={"ops": {"raw_texts": {"config": {"source": uri}}}},
        raise_on_error=False,
        instance=instance,
    )
    assert not result.success
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error:
            messages.append(error.message)
            error = error.cause
    assert any(
        "GCS upload of gs://faulty/run/text_splits/" in m and "rerun it" in m for m in messages
    ), messages
    # raw_texts is recorded and its manifest saved; text_splits has no version a later run
    # could read: nothing recorded, no manifest written
    assert instance.get_latest_materialization_event(dg.AssetKey("text_splits")) is None
    restarted = start(port, data_dir)
    try:
        raw = latest_manifest(instance, store, "raw_texts", RawTextsManifest)
        assert store.exists(raw.path)
        assert not store.exists("manifests/text_splits")
        assert not [key for key in store_listing(store) if "/manifests/text_splits/" in key]
    finally:
        restarted.stop()


def store_listing(store) -> list[str]:
    return [blob.name for blob in gcs_client().list_blobs(store.bucket)]
