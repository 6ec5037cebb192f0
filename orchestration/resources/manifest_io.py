"""The IO manager assets pass their manifests through: one JSON per asset version, written once,
loaded as the version Dagster recorded for the input."""

from __future__ import annotations

import dagster as dg
from pydantic import ValidationError

from assets.interfaces.errors import LineageError, MissingArtifactError
from assets.interfaces.manifests import Manifest, manifest_key
from assets.interfaces.store import ArtifactStore

DATA_VERSION_TAG = "dagster/data_version"
# The run id Dagster gives the upstream output context of an asset that no step of the run
# produces (it is loaded as materialized before); tests/unit/test_manifest_io.py pins it.
NO_PRODUCING_RUN = "__EPHEMERAL_RUN_ID"


class ManifestIOManager(dg.ConfigurableIOManager):
    """Writes an asset's manifest to `manifests/<asset>/<version>.json` in the artifact store,
    never over a different one, and loads an input as the exact version Dagster recorded: the
    upstream's materialization in the run that produced it (this run, or the parent run of a
    re-execution), else the latest materialization in the event log. No file another process can
    move decides what an asset reads."""

    store: ArtifactStore

    def handle_output(self, context: dg.OutputContext, obj: Manifest) -> None:
        if not isinstance(obj, Manifest):
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; assets on "
                "the manifest IO manager return a Manifest"
            )
        key = manifest_key(_asset_name(context.asset_key), obj.version)
        payload = obj.model_dump_json(indent=2).encode()
        if self.store.exists(key):
            if self.store.read_bytes(key) != payload:
                raise LineageError(
                    f"{self.store.uri(key)} already holds another manifest for version "
                    f"{obj.version}; a version must name one content"
                )
        else:
            self.store.write_bytes(key, payload)
        context.add_output_metadata({"manifest": dg.MetadataValue.path(self.store.uri(key))})

    def load_input(self, context: dg.InputContext) -> Manifest:
        manifest_type = context.dagster_type.typing_type
        if not (isinstance(manifest_type, type) and issubclass(manifest_type, Manifest)):
            raise TypeError(
                f"input {context.name} must be annotated with its Manifest type, "
                f"got {manifest_type!r}"
            )
        asset = _asset_name(context.asset_key)
        version = recorded_version(context.instance, context.asset_key, _producing_run(context))
        key = manifest_key(asset, version)
        try:
            return manifest_type.model_validate_json(self.store.read_existing(key))
        except MissingArtifactError:
            raise MissingArtifactError(
                f"Dagster recorded {asset} version {version}, but its manifest "
                f"{self.store.uri(key)} is not in this artifact store; materialize {asset} "
                "again (or point TEXTOPS_HOME / the GCS bucket at the store it was written to)"
            ) from None
        except ValidationError as error:
            raise LineageError(
                f"{self.store.uri(key)} is not a {manifest_type.__name__}: {error}; "
                f"materialize {asset} again"
            ) from None


def _asset_name(key: dg.AssetKey) -> str:
    return "/".join(key.path)


def _producing_run(context: dg.InputContext) -> str | None:
    """The run whose step produced the upstream output, when that step is part of this run's
    plan; None when the upstream asset was not selected (it is loaded as materialized last)."""
    upstream = context.upstream_output
    if upstream is None:
        return None
    try:
        run_id = upstream.run_id
    except dg.DagsterInvariantViolationError:
        return None
    return None if run_id == NO_PRODUCING_RUN else run_id


def recorded_version(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, run_id: str | None
) -> str:
    """The data version of `asset_key` as materialized in `run_id`, or, with no run, as
    materialized last in this Dagster instance."""
    name = _asset_name(asset_key)
    if run_id is None:
        event = instance.get_latest_materialization_event(asset_key)
        if event is None:
            raise MissingArtifactError(
                f"{name} has never been materialized in this Dagster instance "
                f"(DAGSTER_HOME): materialize {name} first"
            )
    else:
        events = [
            entry
            for entry in instance.all_logs(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            )
            if entry.asset_materialization and entry.asset_materialization.asset_key == asset_key
        ]
        if not events:
            raise MissingArtifactError(f"run {run_id} recorded no materialization of {name}")
        event = events[-1]
    version = event.asset_materialization.tags.get(DATA_VERSION_TAG)
    if not version:
        raise MissingArtifactError(
            f"the materialization of {name} in run {event.run_id} has no data version; "
            f"materialize {name} again"
        )
    return version
