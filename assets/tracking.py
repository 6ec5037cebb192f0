"""What the stages hand the experiment tracker: the store's files as references (no copies)."""

from __future__ import annotations

import dagster as dg

from assets.interfaces.manifests import TextSplitsManifest
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import Files, TrackingContext


def tracking_context(
    context: dg.AssetExecutionContext,
    data_version: str | None = None,
    model_version: str | None = None,
) -> TrackingContext:
    """The Dagster run, asset and code version a tracked run belongs to, with the versions it
    worked on (the text_splits version, the fine_tuned_model version)."""
    return TrackingContext(
        context.run_id,
        context.asset_key.to_user_string(),
        context.assets_def.code_versions_by_key[context.asset_key],
        data_version,
        model_version,
    )


def splits_files(
    store: ArtifactStore, splits: TextSplitsManifest, sizes: dict[str, int] | None = None
) -> Files:
    """The splits as a tracked dataset: references to their parquet files, with hashes."""
    return Files(
        uris={f"{name}.parquet": store.reference_uri(path) for name, path in splits.paths.items()},
        metadata={
            "text_splits_version": splits.version,
            "raw_texts_version": splits.raw_texts_version,
            "hashes": splits.hashes,
            "label_names": splits.label_names,
            **({"rows": sizes} if sizes else {}),
        },
    )


def model_files(store: ArtifactStore, model_dir: str, metadata: dict) -> Files:
    """A trained model as a tracked artifact: a reference to its folder in the store."""
    return Files(uris={"model": store.reference_uri(model_dir)}, metadata=metadata)


def stored_model_files(store: ArtifactStore, model_version: str, metadata: dict) -> Files:
    """A model by its version, where fine_tuned_model keeps every version."""
    return model_files(
        store, f"fine_tuned_model/{model_version}", {"model_version": model_version, **metadata}
    )
