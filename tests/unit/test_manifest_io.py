"""The manifest IO manager: one manifest per version, never overwritten; inputs are the version
Dagster recorded (this run's, else the latest materialization), never a movable pointer."""

import dagster as dg
import pytest

from assets.interfaces.errors import LineageError, MissingArtifactError
from assets.interfaces.manifests import MANIFEST_IO, RawTextsManifest, as_output, manifest_key
from orchestration.resources import ManifestIOManager


def manifest(version: str, rows: int = 2) -> RawTextsManifest:
    return RawTextsManifest(
        version=version, path=f"raw/{version}.parquet", label_names=["a"], rows=rows
    )


def make_assets(produced: list[RawTextsManifest], seen: list[RawTextsManifest]):
    @dg.asset(io_manager_key=MANIFEST_IO)
    def raw_texts() -> dg.Output[RawTextsManifest]:
        return as_output(produced.pop(0), {})

    @dg.asset
    def reader(raw_texts: RawTextsManifest) -> None:
        seen.append(raw_texts)

    return [raw_texts, reader]


def run(assets, store, instance, selection):
    return dg.materialize(
        assets,
        selection=selection,
        resources={MANIFEST_IO: ManifestIOManager(store=store)},
        instance=instance,
        raise_on_error=False,
    )


def test_same_run_input_is_this_runs_version_and_a_later_run_does_not_move_it(store, instance):
    produced, seen = [manifest("v1"), manifest("v2")], []
    assets = make_assets(produced, seen)
    first = run(assets, store, instance, ["raw_texts", "reader"])
    assert first.success and seen == [manifest("v1")]
    assert (
        first.asset_materializations_for_node("raw_texts")[0].tags["dagster/data_version"] == "v1"
    )
    assert store.exists(manifest_key("raw_texts", "v1"))
    assert run(assets, store, instance, ["raw_texts"]).success  # another run makes v2
    # an input whose upstream is not in the run is the latest materialization: v2
    assert run(assets, store, instance, ["reader"]).success
    assert seen[-1] == manifest("v2")
    # v1's manifest is still there, untouched
    assert RawTextsManifest.model_validate_json(
        store.read_bytes(manifest_key("raw_texts", "v1"))
    ) == manifest("v1")


def test_a_version_cannot_be_rewritten_with_other_content(store, instance):
    produced, seen = [manifest("v1"), manifest("v1", rows=3)], []
    assets = make_assets(produced, seen)
    assert run(assets, store, instance, ["raw_texts"]).success
    clash = run(assets, store, instance, ["raw_texts"])
    assert not clash.success
    error = clash.get_step_failure_events()[0].step_failure_data.error
    messages = []
    while error:
        messages.append(error.message)
        error = error.cause
    assert any("already holds another manifest for version v1" in m for m in messages)
    assert (
        RawTextsManifest.model_validate_json(store.read_bytes(manifest_key("raw_texts", "v1"))).rows
        == 2
    )


def test_an_input_never_materialized_says_what_to_materialize(store, instance):
    assets = make_assets([], [])
    result = run(assets, store, instance, ["reader"])
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert "raw_texts has never been materialized" in text
    assert "materialize raw_texts first" in text


def test_wrong_return_type_is_refused(store, instance):
    @dg.asset(io_manager_key=MANIFEST_IO)
    def raw_texts() -> dict:
        return {"version": "v1"}

    result = run([raw_texts], store, instance, ["raw_texts"])
    assert not result.success


def test_missing_manifest_file_is_named(store, instance):
    produced, seen = [manifest("v1")], []
    assets = make_assets(produced, seen)
    assert run(assets, store, instance, ["raw_texts"]).success
    store.delete(manifest_key("raw_texts", "v1"))
    with pytest.raises(Exception) as error:
        dg.materialize(
            assets,
            selection=["reader"],
            resources={MANIFEST_IO: ManifestIOManager(store=store)},
            instance=instance,
        )
    chain, cause = [], error.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    assert any("Dagster recorded raw_texts version v1, but its manifest" in c for c in chain), chain
    assert MissingArtifactError
    assert LineageError
