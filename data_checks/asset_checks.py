"""Dagster asset checks built on the GX suites. Blocking checks guard what the model learns from:
when one fails with ERROR severity, nothing downstream runs. Each check reads the version of its
asset that Dagster hands it: the one its run made, else the latest materialization."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from assets.interfaces.manifests import (
    DriftManifest,
    RawTextsManifest,
    ServingLogManifest,
    TextSplitsManifest,
)
from assets.interfaces.store import ArtifactStore
from assets.model.training.config import run_training_config
from data_checks.latency import latency_slo_outcome
from data_checks.outcome import CheckOutcome, Severity

RAW_TEXTS = dg.AssetKey("raw_texts")
TEXT_SPLITS = dg.AssetKey("text_splits")
SERVING_LOG = dg.AssetKey("serving_log")


def to_result(asset: dg.AssetKey, name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    severity = (
        dg.AssetCheckSeverity.ERROR
        if outcome.severity is Severity.ERROR
        else dg.AssetCheckSeverity.WARN
    )
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata={key: _metadata_value(value) for key, value in outcome.metadata.items()},
    )


def _metadata_value(value: object) -> Any:
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value


class RawTextsChecksConfig(dg.Config):
    empty_warn_share: float = Field(0.001, description="Warn when more texts than this are empty")
    empty_error_share: float = Field(0.05, description="Fail (blocking) above this empty share")


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "schema", asset=RAW_TEXTS, blocking=True, description="Columns and types of raw_texts"
        ),
        dg.AssetCheckSpec(
            "labels_in_label_set",
            asset=RAW_TEXTS,
            blocking=True,
            description="Every label id belongs to the label mapping",
        ),
        dg.AssetCheckSpec(
            "text_not_null", asset=RAW_TEXTS, blocking=True, description="No null text"
        ),
        dg.AssetCheckSpec(
            "empty_text_share",
            asset=RAW_TEXTS,
            blocking=True,
            description="Share of empty texts: WARN above 0.1 %, ERROR above 5 %",
        ),
    ],
    ins={"raw_texts": dg.AssetIn(RAW_TEXTS)},
)
def raw_texts_checks(
    config: RawTextsChecksConfig, store: ArtifactStore, raw_texts: RawTextsManifest
) -> Iterator[dg.AssetCheckResult]:
    from data_checks.raw import raw_texts_outcomes  # great_expectations: only when checking

    frame = store.read_parquet(raw_texts.path)
    outcomes = raw_texts_outcomes(
        frame, raw_texts.label_names, config.empty_warn_share, config.empty_error_share
    )
    for name, outcome in outcomes.items():
        yield to_result(RAW_TEXTS, name, outcome)


class TextSplitsChecksConfig(dg.Config):
    min_per_class: int = Field(5, ge=1, description="Fewest rows of each class in each split")
    max_class_share_shift: float = Field(
        0.1, description="Warn when a class's share in train and test differs by more"
    )
    max_long_share: float = Field(
        0.01,
        description="Share of texts longer than fine_tuned_model's max_length (counted with its "
        "base_model's tokenizer, as the run configures them) above which long_text_share warns",
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "no_text_in_two_splits",
            asset=TEXT_SPLITS,
            blocking=True,
            description="No text appears in more than one split",
        ),
        dg.AssetCheckSpec(
            "classes_in_every_split",
            asset=TEXT_SPLITS,
            blocking=True,
            description="Every class has at least min_per_class rows per split",
        ),
        dg.AssetCheckSpec(
            "no_empty_text",
            asset=TEXT_SPLITS,
            blocking=True,
            description="No empty text in any split",
        ),
        dg.AssetCheckSpec(
            "class_share_shift", asset=TEXT_SPLITS, description="Train vs test class shares (WARN)"
        ),
        dg.AssetCheckSpec(
            "long_text_share",
            asset=TEXT_SPLITS,
            description="Share of texts longer than fine_tuned_model's max_length tokens of its "
            "base model's tokenizer (WARN)",
        ),
    ],
    ins={"text_splits": dg.AssetIn(TEXT_SPLITS)},
)
def text_splits_checks(
    context: dg.AssetCheckExecutionContext,
    config: TextSplitsChecksConfig,
    store: ArtifactStore,
    text_splits: TextSplitsManifest,
) -> Iterator[dg.AssetCheckResult]:
    from data_checks.splits import stack_splits, text_splits_outcomes
    from data_checks.tokens import count_tokens  # transformers: only when checking

    splits = {name: store.read_parquet(path) for name, path in text_splits.paths.items()}
    # Lengths are measured as this run will train: its base model's tokenizer, its max_length.
    training = run_training_config(context.run.run_config)
    token_counts = count_tokens(stack_splits(splits)["text"], training.base_model)
    outcomes = text_splits_outcomes(
        splits,
        text_splits.label_names,
        token_counts,
        min_per_class=config.min_per_class,
        max_class_share_shift=config.max_class_share_shift,
        max_length=training.max_length,
        max_long_share=config.max_long_share,
    )
    for name, outcome in outcomes.items():
        yield to_result(TEXT_SPLITS, name, outcome)


@dg.asset_check(
    asset=dg.AssetKey("drift_report"),
    description="Warns when the served traffic has drifted",
)
def drift_check(drift_report: DriftManifest) -> dg.AssetCheckResult:
    if not drift_report.judged:
        description = f"not judged yet: {drift_report.predictions} predictions (min_predictions)"
    elif drift_report.drifted:
        description = "drift in: " + ", ".join(drift_report.reasons)
    else:
        description = "no drift"
    return dg.AssetCheckResult(
        passed=not drift_report.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "reasons": dg.MetadataValue.json(drift_report.reasons),
            "predictions": drift_report.predictions,
        },
        description=description,
    )


class LatencySloConfig(dg.Config):
    p95_ms: float = Field(
        300.0,
        gt=0,
        description="Objective for a served model's 95th-percentile request latency (ms); above "
        "it latency_slo warns",
    )
    min_requests: int = Field(
        20, ge=1, description="Fewest requests of a model in the window to judge its latency"
    )


@dg.asset_check(
    asset=SERVING_LOG,
    name="latency_slo",
    description="Warns when a served model's p95 request latency in the window exceeds the "
    "objective",
)
def latency_slo_check(
    config: LatencySloConfig, serving_log: ServingLogManifest
) -> dg.AssetCheckResult:
    outcome = latency_slo_outcome(serving_log.latency_ms, config.p95_ms, config.min_requests)
    return to_result(SERVING_LOG, "latency_slo", outcome)
