"""`approved_model`: the gate between the new model (challenger) and the served one (champion)."""

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.interfaces.manifests import (
    MANIFEST_IO,
    DecisionManifest,
    ModelManifest,
    ReportManifest,
    TextSplitsManifest,
    as_output,
    require_report_on,
    require_trained_on,
)
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from assets.interfaces.store import ArtifactStore
from assets.metadata import markdown_table, numeric_metadata
from assets.model import metrics
from assets.model.evaluate import EvaluationConfig, score_predictions
from assets.model.predict import load_classifier, predict
from assets.progress import Log
from assets.serving.export import serving_variants
from assets.serving.gate import Decision, GateRules, PairedDelta, Scores, decide
from assets.serving.rollback import roll_back
from assets.versioning import source_version
from bento.inference import SERVING_FILE


class ApprovalConfig(dg.Config):
    margin: float = Field(
        -0.01,
        description="The lower 95 % bound of the paired difference challenger - champion on "
        "the same test texts must reach this: -0.01 approves a challenger at worst one point "
        "below the champion (non-inferiority); a positive value asks for a gain beyond noise",
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, description="Bootstrap resamples of the paired difference"
    )
    bootstrap_seed: int = Field(0, description="Seed of the paired bootstrap")
    max_class_f1_drop: float = Field(0.05, ge=0, description="Largest F1 loss allowed on a class")
    absolute_floor: float = Field(
        0.4, description="With no champion yet, the official metric must reach this"
    )
    must_beat_baseline: bool = Field(
        True, description="Require the official metric to exceed the TF-IDF baseline's"
    )
    force: bool = Field(False, description="Approve whatever the comparison says")
    force_reason: str = Field("", description="Why force was used (required with force)")
    parity_tolerance: float = Field(
        0.005,
        ge=0,
        description="An ONNX variant is served only if its official metric on the test split "
        "is within this of the PyTorch model's",
    )
    rollback: bool = Field(
        False,
        description="Instead of judging a challenger: withdraw the served model and serve the "
        "previous approved one again (the rollback job sets this)",
    )
    rollback_reason: str = Field("", description="Why the served model is withdrawn")
    rollback_by: str = Field("", description="Who withdraws it (default: $USER)")
    serving_variant: str = Field(
        "",
        description="Serve this variant (onnx-int8, onnx-fp32 or pytorch) whatever parity "
        "says; empty: the fastest that passes parity",
    )


def report_scores(report: dict[str, Any], test_hash: str) -> Scores:
    model = report["model"]
    return Scores(
        metric=report["metric"],
        value=model["value"],
        ci95=tuple(model["ci95"]),
        per_class_f1={label: row["f1"] for label, row in model["per_class"].items()},
        test_hash=test_hash,
        baseline=report["baseline"]["value"],
    )


TEST_PREDICTIONS = "test_predictions.parquet"  # in a registered model: its test labels


def champion_predictions(
    champion: RegisteredModel, store: ArtifactStore, splits: TextSplitsManifest, log: Log
) -> np.ndarray:
    """The champion's predicted labels on the current test split, in its order: the ones
    recorded at its approval when the split is the same, recomputed otherwise."""
    recorded = champion.path / TEST_PREDICTIONS
    if champion.metadata.get("scores", {}).get("test_hash") == splits.test_hash and (
        recorded.is_file()
    ):
        return pl.read_parquet(recorded)["predicted"].to_numpy()
    log(f"test split changed since {champion.tag} was approved: rescoring it")
    test = store.read_parquet(splits.paths["test"])
    predictor = load_classifier(champion.path, int(champion.metadata["max_length"]))
    return predict(predictor, test["text"].to_list(), log, "rescoring champion").labels


def champion_scores(
    predicted: np.ndarray, y_true: np.ndarray, splits: TextSplitsManifest, metric: str
) -> Scores:
    scored = score_predictions(
        y_true,
        np.eye(len(splits.label_names))[predicted],
        splits.label_names,
        EvaluationConfig(metric=metric),
    )
    return Scores(
        metric,
        scored["value"],
        tuple(scored["ci95"]),
        {k: v["f1"] for k, v in scored["per_class"].items()},
        splits.test_hash,
    )


def lineage_labels(model: ModelManifest, run_id: str, scores: Scores, forced: bool) -> dict:
    """The registry labels of an approved model: its own lineage, from its manifest."""
    return {
        "approved": "true",
        "data_version": model.text_splits.version,
        "raw_data_version": model.text_splits.raw_texts_version,
        "model_version": model.version,
        "dagster_run_id": run_id,
        "code_version": model.code_version,
        "metric": f"{scores.metric}={scores.value:.4f}",
        "forced": "true" if forced else "false",
    }


def variants_markdown(serving: dict[str, Any]) -> str:
    rows = [
        [
            f"**{name}**" if name == serving["variant"] else name,
            f"{score['value']:.4f}",
            f"{score['agreement']:.2%}",
            f"{score['batch_consistency']:.2%}" if "batch_consistency" in score else "",
            f"{score['texts_per_s']:.0f}",
            "yes" if score["passed"] else "**no**",
        ]
        for name, score in serving["variants"].items()
    ]
    header = [
        "variant",
        serving["metric"].replace("_", " "),
        "agreement",
        "alone = in batch",
        "texts/s",
        "parity",
    ]
    return "\n".join(
        [
            f"serving **{serving['variant']}**: {serving['why']}",
            "",
            *markdown_table(header, rows, align="lrrrrc"),
        ]
    )


def decision_markdown(decision: Decision) -> str:
    rows = [
        [
            c.rule,
            f"{c.challenger:.4f}",
            f"{c.reference:.4f}",
            "yes" if c.passed else "**no**",
        ]
        for c in decision.comparisons
    ]
    lines = [
        f"**{decision.summary}**",
        "",
        *markdown_table(["rule", "challenger", "reference", "passed"], rows, align="lrrc"),
    ]
    if decision.reasons:
        lines += ["", *[f"- {reason}" for reason in decision.reasons]]
    return "\n".join(lines)


@dg.asset(
    group_name="serving",
    kinds={"bentoml"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Approval of the new model against the served champion on the same test split; "
    "an approved model goes to the BentoML model store with its lineage labels.",
)
def approved_model(
    context: dg.AssetExecutionContext,
    config: ApprovalConfig,
    store: ArtifactStore,
    registry: ModelRegistry,
    fine_tuned_model: ModelManifest,
    evaluation_report: ReportManifest,
    text_splits: TextSplitsManifest,
) -> dg.Output[DecisionManifest]:
    if config.rollback:
        return roll_back(context, config.rollback_reason, config.rollback_by, store, registry)
    if config.force and not config.force_reason.strip():
        raise ValueError("force=True needs force_reason: say why the gate is overridden")
    model = fine_tuned_model
    require_trained_on(model, text_splits, "approved_model")
    require_report_on(evaluation_report, model, "approved_model")
    report = store.read_json(f"{evaluation_report.path}/report.json")
    challenger = report_scores(report, text_splits.test_hash)
    rules = GateRules(
        config.margin, config.max_class_f1_drop, config.absolute_floor, config.must_beat_baseline
    )
    force_reason = config.force_reason.strip() if config.force else None
    scored = store.read_parquet(f"{evaluation_report.path}/predictions.parquet")
    y_true, predicted = scored["label"].to_numpy(), scored["predicted"].to_numpy()
    # Champion lookup, decision and registration as one step: a concurrent gate waits, then
    # compares its challenger with whatever this one made the champion.
    with registry.exclusive():
        champion = registry.champion()
        reference = paired = None
        if champion:
            theirs = champion_predictions(champion, store, text_splits, context.log.info)
            reference = champion_scores(theirs, y_true, text_splits, challenger.metric)
            paired = PairedDelta(
                *metrics.paired_bootstrap(
                    challenger.metric,
                    y_true,
                    predicted,
                    theirs,
                    len(text_splits.label_names),
                    config.bootstrap_resamples,
                    config.bootstrap_seed,
                )
            )
        decision = decide(challenger, reference, rules, force_reason, paired)
        context.log.info(decision.summary)
        lineage = {
            "challenger": {
                "fine_tuned_model": model.version,
                "evaluation_report": evaluation_report.version,
                "text_splits": text_splits.version,
                "raw_texts": text_splits.raw_texts_version,
                "test_hash": text_splits.test_hash,
                "code_version": model.code_version,
            },
            "champion": ({"tag": champion.tag, **champion.labels} if champion else None),
        }
        record: dict[str, Any] = {
            **decision.to_dict(),
            "lineage": lineage,
            "dagster_run_id": context.run_id,
            "config": config.model_dump(),
            "served_tag": champion.tag if champion else None,
        }
        served_labels = dict(champion.labels) if champion else {}
        if decision.approved:
            served_labels = lineage_labels(model, context.run_id, challenger, decision.forced)
            metadata = {
                "label_names": model.label_names,
                "max_length": model.max_length,
                "base_model": model.base_model,
                "text_splits": model.text_splits.model_dump(),
                "scores": {
                    "metric": challenger.metric,
                    "value": challenger.value,
                    "ci95": list(challenger.ci95),
                    "per_class_f1": challenger.per_class_f1,
                    "test_hash": text_splits.test_hash,
                },
                "metrics": {
                    challenger.metric: challenger.value,
                    f"{challenger.metric}_ci95": list(challenger.ci95),
                    "accuracy": report["model"]["accuracy"],
                    "ece": report["model"]["ece"],
                    "baseline": report["baseline"]["value"],
                },
                "decision": decision.summary,
            }
            with tempfile.TemporaryDirectory() as scratch:
                folder = Path(scratch) / "model"
                shutil.copytree(store.local_dir(model.path), folder)
                test = store.read_parquet(text_splits.paths["test"])
                serving = serving_variants(
                    folder,
                    test["text"].to_list(),
                    test["label"].to_numpy(),
                    challenger.metric,
                    model.max_length,
                    config.parity_tolerance,
                    context.log.info,
                    config.serving_variant,
                )
                (folder / SERVING_FILE).write_text(json.dumps(serving, indent=2))
                served_labels["serving_variant"] = serving["variant"]
                metadata["serving"] = serving
                record["serving"] = serving
                (folder / "evaluation_report.json").write_text(json.dumps(report, indent=2))
                scored.select("label", "predicted").write_parquet(folder / TEST_PREDICTIONS)
                (folder / "decision.json").write_text(json.dumps(record, indent=2))
                record["served_tag"] = registry.register(folder, served_labels, metadata)
            context.log.info(f"registered {record['served_tag']}")

    version = f"{model.version}-{context.run_id[:8]}"
    manifest = DecisionManifest.save(
        store, version, record, decision.approved, record["served_tag"], served_labels
    )
    serving_metadata: dict[str, Any] = {}
    if "serving" in record:
        serving = record["serving"]
        serving_metadata = {
            "serving_variant": dg.MetadataValue.text(serving["variant"]),
            "serving_variants": dg.MetadataValue.md(variants_markdown(serving)),
            **numeric_metadata(
                {
                    f"{name}/{key}": score[key]
                    for name, score in serving["variants"].items()
                    for key in ("value", "agreement", "texts_per_s")
                }
            ),
        }
    return as_output(
        manifest,
        {
            **serving_metadata,
            "approved": decision.approved,
            "forced": decision.forced,
            "decision": dg.MetadataValue.md(decision_markdown(decision)),
            "summary": dg.MetadataValue.text(decision.summary),
            "served_tag": dg.MetadataValue.text(str(record["served_tag"])),
            **numeric_metadata(
                {
                    f"challenger_{challenger.metric}": challenger.value,
                    f"champion_{challenger.metric}": reference.value if reference else None,
                    "delta": challenger.value - reference.value if reference else None,
                    "paired_delta_ci_low": paired.low if paired else None,
                    "paired_delta_ci_high": paired.high if paired else None,
                }
            ),
            "lineage": dg.MetadataValue.json(lineage),
        },
    )
