"""`approved_model`: the gate between the new model (challenger) and the served one (champion).

The slow parts happen with no lock held: the champion's predictions (rescored when the test
split changed), the paired bootstrap, and publishing the challenger to the registry (copied,
verified, not yet served). Only then does the gate take the registry's lock, check that the
champion it compared with is still the champion, and approve in one label flip. If another gate
approved a model meanwhile, this one decides again against the new champion."""

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.interfaces.manifests import (
    MANIFEST_IO,
    DecisionManifest,
    ModelManifest,
    ReportManifest,
    ServingVariantsManifest,
    TextSplitsManifest,
    as_output,
    require_report_on,
    require_trained_on,
    require_variants_of,
)
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import DecisionRecord, ExperimentTracker, location_metadata
from assets.metadata import markdown_table, numeric_metadata
from assets.model import metrics
from assets.progress import Log
from assets.serving.champion import (
    TEST_PREDICTIONS,
    LabelSetMismatchError,
    champion_predictions,
    champion_scores,
    require_recorded_champion,
)
from assets.serving.gate import Decision, GateRules, PairedDelta, Scores, decide
from assets.serving.variants import serving_metadata
from assets.tracking import model_files, tracking_context
from assets.versioning import run_version, source_version
from textops_core.inference import SERVING_FILE

# Gates that lose the race for the champion decide again; past this many, the run fails.
MAX_ATTEMPTS = 5


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
    force_reason: str = Field(
        "",
        description="Why the gate was overridden (required with force); recorded in the "
        "decision and the model's labels",
    )

    def rules(self) -> GateRules:
        return GateRules(
            self.margin, self.max_class_f1_drop, self.absolute_floor, self.must_beat_baseline
        )


@dataclass(frozen=True)
class Challenger:
    """The model before the gate, with everything the gate reads of it."""

    model: ModelManifest
    report_manifest: ReportManifest
    splits: TextSplitsManifest
    variants: ServingVariantsManifest
    report: dict[str, Any]
    scores: Scores
    scored: pl.DataFrame  # the test split's labels and the model's predictions
    serving: dict[str, Any]  # serving.json: the variant chosen and why

    @classmethod
    def load(
        cls,
        store: ArtifactStore,
        model: ModelManifest,
        report: ReportManifest,
        splits: TextSplitsManifest,
        variants: ServingVariantsManifest,
    ) -> "Challenger":
        """The challenger's inputs, once each has been checked to be of the same model."""
        require_trained_on(model, splits, "approved_model")
        require_report_on(report, model, "approved_model")
        require_variants_of(variants, model, "approved_model")
        scores = store.read_json(f"{report.path}/report.json")
        return cls(
            model,
            report,
            splits,
            variants,
            scores,
            report_scores(scores, splits.test_hash),
            store.read_parquet(f"{report.path}/predictions.parquet"),
            store.read_json(f"{variants.path}/{SERVING_FILE}"),
        )

    def lineage(self) -> dict[str, Any]:
        return {
            "fine_tuned_model": self.model.version,
            "evaluation_report": self.report_manifest.version,
            "serving_variants": self.variants.version,
            "text_splits": self.splits.version,
            "raw_texts": self.splits.raw_texts_version,
            "test_hash": self.splits.test_hash,
            "code_version": self.model.code_version,
        }


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


def lineage_labels(challenger: Challenger, run_id: str, forced: bool) -> dict:
    """The registry labels of an approved model: its own lineage, from its manifest."""
    model, scores = challenger.model, challenger.scores
    return {
        "approved": "true",
        "data_version": model.text_splits.version,
        "raw_data_version": model.text_splits.raw_texts_version,
        "model_version": model.version,
        "dagster_run_id": run_id,
        "code_version": model.code_version,
        "metric": f"{scores.metric}={scores.value:.4f}",
        "forced": "true" if forced else "false",
        "serving_variant": challenger.serving["variant"],
    }


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


@dataclass(frozen=True)
class Judgement:
    """One decision against one champion."""

    decision: Decision
    champion: RegisteredModel | None
    reference: Scores | None
    paired: PairedDelta | None


def judge(
    challenger: Challenger,
    champion: RegisteredModel | None,
    config: ApprovalConfig,
    store: ArtifactStore,
    log: Log,
) -> Judgement:
    """The gate's decision on the challenger against `champion` (None: no champion yet)."""
    splits, scores = challenger.splits, challenger.scores
    y_true = challenger.scored["label"].to_numpy()
    force_reason = config.force_reason.strip() if config.force else None
    reference = paired = None
    unmatched = incomparable = None
    if champion is not None:
        try:
            theirs = champion_predictions(champion, store, splits, log)
        except LabelSetMismatchError as error:
            if force_reason is None:
                raise
            incomparable = champion.tag
            unmatched = f"champion {champion.tag} not compared: {error}"
            log(unmatched)
        else:
            reference = champion_scores(theirs, y_true, splits, scores.metric)
            paired = PairedDelta(
                *metrics.paired_bootstrap(
                    metrics.parse_metric(scores.metric, splits.label_names),
                    y_true,
                    challenger.scored["predicted"].to_numpy(),
                    theirs,
                    len(splits.label_names),
                    config.bootstrap_resamples,
                    config.bootstrap_seed,
                )
            )
    decision = decide(scores, reference, config.rules(), force_reason, paired, incomparable)
    if unmatched:
        decision.reasons.insert(0, unmatched)
    return Judgement(decision, champion, reference, paired)


def model_folder(scratch: Path, store: ArtifactStore, challenger: Challenger, record: dict) -> Path:
    """The folder the registry keeps for an approved model: weights, tokenizer and config,
    the ONNX variants and serving.json, the evaluation, its test predictions and the decision."""
    folder = scratch / "model"
    shutil.copytree(store.local_dir(challenger.model.path), folder)
    shutil.copytree(store.local_dir(challenger.variants.path), folder, dirs_exist_ok=True)
    (folder / "evaluation_report.json").write_text(json.dumps(challenger.report, indent=2))
    challenger.scored.select("label", "predicted").write_parquet(folder / TEST_PREDICTIONS)
    (folder / "decision.json").write_text(json.dumps(record, indent=2))
    return folder


def registry_metadata(challenger: Challenger, decision: Decision) -> dict[str, Any]:
    model, scores, report = challenger.model, challenger.scores, challenger.report
    return {
        "label_names": model.label_names,
        "max_length": model.max_length,
        "base_model": model.base_model,
        "text_splits": model.text_splits.model_dump(),
        "scores": {
            "metric": scores.metric,
            "value": scores.value,
            "ci95": list(scores.ci95),
            "per_class_f1": scores.per_class_f1,
            "test_hash": challenger.splits.test_hash,
        },
        "metrics": {
            scores.metric: scores.value,
            f"{scores.metric}_ci95": list(scores.ci95),
            "accuracy": report["model"]["accuracy"],
            "ece": report["model"]["ece"],
            "baseline": report["baseline"]["value"],
        },
        "decision": decision.summary,
        "serving": challenger.serving,
    }


def _tag(model: RegisteredModel | None) -> str | None:
    return model.tag if model else None


def approve_if_still_champion(
    registry: ModelRegistry, tag: str, champion: str | None, lock: dict[str, float]
) -> str | None:
    """Under the registry's lock: approve `tag` if `champion` (what the gate compared with) is
    still the champion. Returns the champion found; adds the lock's wait and hold to `lock`."""
    with registry.exclusive() as waited_s:
        held_from = time.monotonic()
        current = _tag(registry.champion())
        if current == champion:
            registry.approve(tag)
        lock["waited_s"] += waited_s
        lock["held_s"] += time.monotonic() - held_from
    return current


@dataclass
class GateOutcome:
    """What the gate decided, the record it keeps, and the model served after it."""

    judged: Judgement
    record: dict[str, Any]
    served_labels: dict[str, str]
    lock: dict[str, float]  # attempts, and the registry lock's wait and hold (s)


def decision_record(
    challenger: Challenger, judged: Judgement, config: ApprovalConfig, run_id: str
) -> dict[str, Any]:
    champion = judged.champion
    return {
        **judged.decision.to_dict(),
        "lineage": {
            "challenger": challenger.lineage(),
            "champion": ({"tag": champion.tag, **champion.labels} if champion else None),
        },
        "dagster_run_id": run_id,
        "config": config.model_dump(),
        "served_tag": _tag(champion),
    }


def gate(
    challenger: Challenger,
    registry: ModelRegistry,
    store: ArtifactStore,
    config: ApprovalConfig,
    run_id: str,
    log: Log,
) -> GateOutcome:
    """Decide against the champion; an approved challenger is published with no lock held,
    then approved in one label flip if the champion is still the one it was compared with.
    A gate that lost that race decides again against the new champion, MAX_ATTEMPTS times."""
    lock = {"attempts": 0, "waited_s": 0.0, "held_s": 0.0}
    while True:
        lock["attempts"] += 1
        judged = judge(challenger, registry.champion(), config, store, log)
        log(judged.decision.summary)
        record = decision_record(challenger, judged, config, run_id)
        champion = _tag(judged.champion)
        if not judged.decision.approved:
            served = dict(judged.champion.labels) if judged.champion else {}
            return GateOutcome(judged, record, served, lock)
        labels = lineage_labels(challenger, run_id, judged.decision.forced)
        record["serving"] = challenger.serving
        with tempfile.TemporaryDirectory() as scratch:
            folder = model_folder(Path(scratch), store, challenger, record)
            tag = registry.publish(folder, labels, registry_metadata(challenger, judged.decision))
        current = approve_if_still_champion(registry, tag, champion, lock)
        if current == champion:
            record["served_tag"] = tag
            log(f"approved {tag}: the registry's lock was held {lock['held_s'] * 1000:.0f} ms")
            return GateOutcome(judged, record, labels, lock)
        registry.discard(tag)
        if lock["attempts"] >= MAX_ATTEMPTS:
            raise RuntimeError(
                f"the champion changed {MAX_ATTEMPTS} times while this gate decided (last "
                f"{champion} -> {current}); nothing was approved: run approved_model again"
            )
        log(
            f"the champion changed from {champion} to {current} while this gate decided: "
            "deciding again against the new champion"
        )


def decision_metadata(outcome: GateOutcome, challenger: Challenger) -> dict[str, Any]:
    """What the UI shows of the decision: the sentence, the rule table, chartable numbers."""
    decision, scores = outcome.judged.decision, challenger.scores
    reference, paired, lock = outcome.judged.reference, outcome.judged.paired, outcome.lock
    return {
        **(serving_metadata(challenger.serving) if decision.approved else {}),
        "approved": decision.approved,
        "forced": decision.forced,
        "decision": dg.MetadataValue.md(decision_markdown(decision)),
        "summary": dg.MetadataValue.text(decision.summary),
        "served_tag": dg.MetadataValue.text(str(outcome.record["served_tag"])),
        **numeric_metadata(
            {
                f"challenger_{scores.metric}": scores.value,
                f"champion_{scores.metric}": reference.value if reference else None,
                "delta": scores.value - reference.value if reference else None,
                "paired_delta_ci_low": paired.low if paired else None,
                "paired_delta_ci_high": paired.high if paired else None,
                "registry_lock_held_s": lock["held_s"] if decision.approved else None,
                "registry_lock_waited_s": lock["waited_s"] if decision.approved else None,
                "gate_attempts": lock["attempts"],
            }
        ),
        "lineage": dg.MetadataValue.json(outcome.record["lineage"]),
    }


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
    tracker: ExperimentTracker,
    fine_tuned_model: ModelManifest,
    evaluation_report: ReportManifest,
    text_splits: TextSplitsManifest,
    serving_variants: ServingVariantsManifest,
) -> dg.Output[DecisionManifest]:
    if config.force and not config.force_reason.strip():
        raise ValueError("force=True needs force_reason: say why the gate is overridden")
    challenger = Challenger.load(
        store, fine_tuned_model, evaluation_report, text_splits, serving_variants
    )
    require_recorded_champion(context.instance, registry)
    outcome = gate(challenger, registry, store, config, context.run_id, context.log.info)
    decision, record = outcome.judged.decision, outcome.record
    record["registry_lock"] = outcome.lock
    manifest = DecisionManifest.save(
        store,
        run_version(fine_tuned_model.version, context.run_id),
        record,
        decision.approved,
        record["served_tag"],
        outcome.served_labels,
    )
    judged = model_files(store, fine_tuned_model.path, {"model_version": fine_tuned_model.version})
    tracked = tracker.log_decision(
        tracking_context(context, text_splits.version, fine_tuned_model.version),
        DecisionRecord(
            decision.approved,
            decision.summary,
            record,
            model=judged,
            champion=judged if decision.approved else None,
        ),
    )
    return as_output(manifest, decision_metadata(outcome, challenger) | location_metadata(tracked))
