"""Typed manifests: what one asset version hands to the assets downstream of it.

A manifest is small JSON (paths in the artifact store, hashes, label names, versions). The
manifest IO manager writes it once per version and, for a downstream asset, loads the version
that Dagster recorded: the one made in the same run, else the latest materialization in the
event log. Its `version` is the asset's Dagster data version. Written here because Dagster's
IO managers store an output, not the lineage between outputs: the manifests carry it, and the
require_* checks refuse inputs that do not belong together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

from assets.interfaces.errors import LineageError

if TYPE_CHECKING:
    from assets.interfaces.store import ArtifactStore

# Resource key of the IO manager that stores manifests; assets that hand one on declare it.
MANIFEST_IO = "manifest_io_manager"
SPLITS = ("train", "validation", "test")


def manifest_key(asset: str, version: str) -> str:
    """Where the manifest of one version of `asset` lives in the artifact store."""
    return f"manifests/{asset}/{version}.json"


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(description="The Dagster data version of this materialization")


class RawTextsManifest(Manifest):
    path: str = Field(description="raw_texts parquet")
    label_names: list[str] = Field(description="label id -> name")
    rows: int


class TextSplitsManifest(Manifest):
    paths: dict[str, str] = Field(description="split name -> parquet")
    hashes: dict[str, str] = Field(description="split name -> content hash")
    label_names: list[str]
    raw_texts_version: str

    @property
    def test_hash(self) -> str:
        return self.hashes["test"]


class ModelManifest(Manifest):
    path: str = Field(description="folder: safetensors, tokenizer, config, training.json")
    label_names: list[str]
    max_length: int
    base_model: str
    code_version: str = Field(description="code_version of fine_tuned_model that trained it")
    best_val_macro_f1: float
    temperature: float = Field(description="fitted on validation; divides the logits")
    text_splits: TextSplitsManifest = Field(description="the splits it was trained on")


class ReportManifest(Manifest):
    path: str = Field(description="folder: report.json, report.md, plots, predictions")
    metric: str
    value: float
    model_version: str = Field(description="the fine_tuned_model version it scored")
    text_splits_version: str = Field(description="the text_splits version it scored on")
    test_hash: str


class ServingVariantsManifest(Manifest):
    path: str = Field(description="folder: onnx/ (fp32 and int8) and serving.json")
    variant: str = Field(description="the variant that would be served")
    model_version: str = Field(description="the fine_tuned_model version it exported")
    metric: str = Field(description="the official metric parity was judged on")


class DecisionManifest(Manifest):
    path: str = Field(description="decision.json")
    approved: bool
    served_tag: str | None = Field(description="the model served after this decision")
    served_labels: dict[str, str] = Field(description="lineage labels of the served model")

    @classmethod
    def save(
        cls,
        store: ArtifactStore,
        version: str,
        record: dict[str, Any],
        approved: bool,
        served_tag: str | None,
        served_labels: Mapping[str, str],
    ) -> DecisionManifest:
        """Write the decision record of `approved_model` version `version` and describe it."""
        path = f"approved_model/{version}/decision.json"
        store.write_json(path, record)
        return cls(
            version=version,
            path=path,
            approved=approved,
            served_tag=served_tag,
            served_labels=dict(served_labels),
        )


class ServedModelManifest(Manifest):
    path: str = Field(description="served.json: the registry's champion, and any rollback")
    tag: str = Field(description="the model the registry serves (its champion)")
    labels: dict[str, str] = Field(description="its lineage labels")

    @classmethod
    def save(
        cls, store: ArtifactStore, version: str, record: dict[str, Any], tag: str, labels: dict
    ) -> ServedModelManifest:
        path = f"served_model/{version}/served.json"
        store.write_json(path, record)
        return cls(version=version, path=path, tag=tag, labels=dict(labels))


class ServingLogManifest(Manifest):
    path: str = Field(description="serving_log parquet: every prediction of the window, no text")
    log_dir: str = Field(
        "",
        description="The service's log the window was read from: where the texts stay, under "
        "the log's own permissions and retention",
    )
    since: float
    until: float
    rows: int
    model_tags: list[str]
    latency_ms: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="model tag -> request latency percentiles (p50, p95, p99) and requests",
    )


class DriftManifest(Manifest):
    path: str = Field(description="report.json")
    judged: bool = Field(description="enough predictions to judge drift on")
    drifted: bool
    reasons: list[str]
    predictions: int = Field(description="predictions of the model judged")
    model_tag: str | None = Field(description="the served model the traffic was compared for")


M = TypeVar("M", bound=Manifest)


def as_output(manifest: M, metadata: Mapping[str, Any]) -> dg.Output[M]:
    """The asset's output: its manifest, with the manifest's version as the data version."""
    return dg.Output(manifest, data_version=dg.DataVersion(manifest.version), metadata=metadata)


def require_trained_on(model: ModelManifest, splits: TextSplitsManifest, asset: str) -> None:
    """`asset` scores `model` on `splits`: refuse unless the model was trained on them."""
    if model.text_splits.version != splits.version:
        raise LineageError(
            f"{asset}: fine_tuned_model {model.version} was trained on text_splits "
            f"{model.text_splits.version}, but the text_splits given is {splits.version}. "
            f"Materialize fine_tuned_model on these splits first (or run the pipeline job), "
            f"then {asset}."
        )


def require_report_on(report: ReportManifest, model: ModelManifest, asset: str) -> None:
    """`asset` acts on `report` about `model`: refuse unless the report scored that model."""
    if report.model_version != model.version:
        raise LineageError(
            f"{asset}: evaluation_report {report.version} scored fine_tuned_model "
            f"{report.model_version}, not the fine_tuned_model given ({model.version}). "
            f"Materialize evaluation_report for this model first, then {asset}."
        )
    if report.text_splits_version != model.text_splits.version:
        raise LineageError(
            f"{asset}: evaluation_report {report.version} scored on text_splits "
            f"{report.text_splits_version}, but fine_tuned_model {model.version} was trained on "
            f"{model.text_splits.version}. Materialize evaluation_report first, then {asset}."
        )


def require_variants_of(
    variants: ServingVariantsManifest, model: ModelManifest, asset: str
) -> None:
    """`asset` serves `variants` of `model`: refuse unless they were exported from it."""
    if variants.model_version != model.version:
        raise LineageError(
            f"{asset}: serving_variants {variants.version} were exported from fine_tuned_model "
            f"{variants.model_version}, not the fine_tuned_model given ({model.version}). "
            f"Materialize serving_variants for this model first, then {asset}."
        )
