"""The bucket goes away in the middle of a run: a clear error, and nothing half-visible."""

from dagster_gcp import GCSResource

from assets import splits as splits_module
from orchestration.gcs import GcsArtifactStore
from tests.conftest import free_port, materialize_selected, write_tweeteval
from tests.gcp.test_gcs_store import upload_folder


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
    store = GcsArtifactStore(
        gcs=GCSResource(project="t"), bucket="faulty", prefix="run", retry_deadline_s=3
    )

    original = splits_module.build_splits

    def build_then_lose_the_bucket(raw, config):
        result = original(raw, config)
        server.stop()  # raw_texts is saved; text_splits' writes will fail
        return result

    monkeypatch.setattr(splits_module, "build_splits", build_then_lose_the_bucket)
    result = materialize_selected(
        store,
        ["raw_texts", "text_splits"],
        run_config={"ops": {"raw_texts": {"config": {"source": uri}}}},
        raise_on_error=False,
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
    restarted = start(port, data_dir)
    try:
        assert store.exists("raw_texts/latest.json")
        assert not store.exists("text_splits/latest.json")  # no half-written version is current
    finally:
        restarted.stop()
