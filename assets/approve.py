"""`approved_model`: the gate between the new model (challenger) and the served one (champion)."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.evaluate import EvaluationConfig, evaluation_report, score_predictions
from assets.gate import Decision, GateRules, Scores, decide
from assets.numbers import numeric_metadata
from assets.progress import Log
from assets.training.predict import load_classifier, predict_proba
from orchestration.resources import ArtifactStore, ModelRegistry, RegisteredModel


class ApprovalConfig(dg.Config):
    margin: float = Field(0.0, description="Challenger must reach champion + margin")
    max_class_f1_drop: float = Field(0.05, ge=0, description="Largest F1 loss allowed on a class")
    absolute_floor: float = Field(
        0.4, description="With no champion yet, the official metric must reach this"
    )
    must_beat_baseline: bool = Field(
        True, description="Require the official metric to exceed the TF-IDF baseline's"
    )
    force: bool = Field(False, description="Approve whatever the comparison says")
    force_reason: str = Field("", description="Why force was used (required with force)")


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


def champion_scores(
    champion: RegisteredModel,
    store: ArtifactStore,
    splits: dict[str, Any],
    metric: str,
    log: Log,
) -> Scores:
    """The champion's scores on the current test split: recorded ones when the split is the
    one it was scored on, recomputed otherwise."""
    test_hash = splits["hashes"]["test"]
    recorded = champion.metadata.get("scores", {})
    if recorded.get("test_hash") == test_hash and recorded.get("metric") == metric:
        return Scores(
            metric, recorded["value"], tuple(recorded["ci95"]), recorded["per_class_f1"], test_hash
        )
    log(f"test split changed since {champion.tag} was approved: rescoring it")
    test = store.read_parquet(splits["paths"]["test"])
    model, tokenizer = load_classifier(champion.path)
    max_length = int(champion.metadata.get("max_length", 128))
    probabilities = predict_proba(
        model, tokenizer, test["text"].to_list(), max_length, log=log, what="rescoring champion"
    )
    scored = score_predictions(
        test["label"].to_numpy(),
        probabilities.probabilities,
        splits["label_names"],
        EvaluationConfig(metric=metric),
    )
    return Scores(
        metric,
        scored["value"],
        tuple(scored["ci95"]),
        {k: v["f1"] for k, v in scored["per_class"].items()},
        test_hash,
    )


def code_version() -> str:
    """The git commit of this code, when it runs from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
            check=True,
        )
        return sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def decision_markdown(decision: Decision) -> str:
    lines = [
        f"**{decision.summary}**",
        "",
        "| rule | challenger | reference | passed |",
        "| --- | ---: | ---: | :---: |",
    ]
    for c in decision.comparisons:
        lines.append(
            f"| {c.rule} | {c.challenger:.4f} | {c.reference:.4f} | "
            f"{'yes' if c.passed else '**no**'} |"
        )
    if decision.reasons:
        lines += ["", *[f"- {reason}" for reason in decision.reasons]]
    return "\n".join(lines)


@dg.asset(
    deps=[evaluation_report],
    group_name="serving",
    kinds={"bentoml"},
    description="Approval of the new model against the served champion on the same test split; "
    "an approved model goes to the BentoML model store with its lineage labels.",
)
def approved_model(
    context: dg.AssetExecutionContext,
    config: ApprovalConfig,
    store: ArtifactStore,
    registry: ModelRegistry,
) -> dg.MaterializeResult:
    if config.force and not config.force_reason.strip():
        raise ValueError("force=True needs force_reason: say why the gate is overridden")
    splits = store.latest("text_splits")
    model_manifest = store.latest("fine_tuned_model")
    report_manifest = store.latest("evaluation_report")
    report = store.read_json(f"{report_manifest['path']}/report.json")
    if report["lineage"]["fine_tuned_model"] != model_manifest["version"]:
        raise ValueError(
            "evaluation_report is older than fine_tuned_model: materialize evaluation_report first"
        )
    test_hash = splits["hashes"]["test"]
    challenger = report_scores(report, test_hash)
    champion = registry.champion()
    reference = (
        champion_scores(champion, store, splits, challenger.metric, context.log.info)
        if champion
        else None
    )
    decision = decide(
        challenger,
        reference,
        GateRules(
            config.margin,
            config.max_class_f1_drop,
            config.absolute_floor,
            config.must_beat_baseline,
        ),
        config.force_reason.strip() if config.force else None,
    )
    context.log.info(decision.summary)

    lineage = {
        "challenger": {
            "fine_tuned_model": model_manifest["version"],
            "text_splits": splits["version"],
            "raw_texts": splits["raw_texts_version"],
            "test_hash": test_hash,
        },
        "champion": ({"tag": champion.tag, **champion.labels} if champion else None),
    }
    record = {
        **decision.to_dict(),
        "lineage": lineage,
        "dagster_run_id": context.run_id,
        "config": config.model_dump(),
        "served_tag": champion.tag if champion else None,
    }
    if decision.approved:
        labels = {
            "approved": "true",
            "data_version": splits["version"],
            "raw_data_version": splits["raw_texts_version"],
            "dagster_run_id": context.run_id,
            "code_version": code_version(),
            "metric": f"{challenger.metric}={challenger.value:.4f}",
            "forced": "true" if decision.forced else "false",
        }
        metadata = {
            "label_names": splits["label_names"],
            "max_length": model_manifest["max_length"],
            "scores": {
                "metric": challenger.metric,
                "value": challenger.value,
                "ci95": list(challenger.ci95),
                "per_class_f1": challenger.per_class_f1,
                "test_hash": test_hash,
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
            shutil.copytree(store.local_dir(model_manifest["path"]), folder)
            (folder / "evaluation_report.json").write_text(json.dumps(report, indent=2))
            (folder / "decision.json").write_text(json.dumps(record, indent=2))
            record["served_tag"] = registry.register(folder, labels, metadata)
        context.log.info(f"registered {record['served_tag']}")

    version = f"{model_manifest['version']}-{context.run_id[:8]}"
    store.write_json(f"approved_model/{version}/decision.json", record)
    store.publish(
        "approved_model",
        {
            "version": version,
            "approved": decision.approved,
            "served_tag": record["served_tag"],
            "path": f"approved_model/{version}/decision.json",
        },
    )
    markdown = decision_markdown(decision)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(str(record["served_tag"])),
        metadata={
            "approved": decision.approved,
            "forced": decision.forced,
            "decision": dg.MetadataValue.md(markdown),
            "summary": dg.MetadataValue.text(decision.summary),
            "served_tag": dg.MetadataValue.text(str(record["served_tag"])),
            **numeric_metadata(
                {
                    f"challenger_{challenger.metric}": challenger.value,
                    f"champion_{challenger.metric}": reference.value if reference else None,
                    "delta": challenger.value - reference.value if reference else None,
                }
            ),
            "lineage": dg.MetadataValue.json(lineage),
        },
    )
