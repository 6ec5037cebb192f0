"""`evaluation_report`: the fine-tuned model on the test split, with intervals and a baseline."""

import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field, field_validator

from assets.interfaces.manifests import (
    MANIFEST_IO,
    ModelManifest,
    ReportManifest,
    TextSplitsManifest,
    as_output,
    require_trained_on,
)
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import (
    Evaluation,
    ExperimentTracker,
    location_metadata,
)
from assets.metadata import markdown_table, numeric_metadata
from assets.model import metrics
from assets.model.baseline import tfidf_logistic_regression
from assets.model.calibration import reliability_bins, reliability_diagram
from assets.model.plots import confusion_matrix
from assets.model.predict import load_classifier, predict
from assets.plots import markdown_image
from assets.progress import Log
from assets.tracking import model_files, tracking_context
from assets.versioning import run_version, source_version


class EvaluationConfig(dg.Config):
    metric: str = Field(
        "macro_f1",
        description="The task's official metric: macro_f1, macro_recall, f1:<class> (the F1 of "
        "one class, e.g. f1:irony) or mean_f1:<class>,<class> (e.g. mean_f1:against,favor)",
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, description="Bootstrap resamples of the test split for the 95 % interval"
    )
    bootstrap_seed: int = Field(0, description="Seed of the bootstrap")
    batch_size: int = Field(64, ge=1, description="Inference batch size (batches sorted by length)")
    latency_samples: int = Field(64, ge=1, description="Texts timed one at a time for latency")
    tracked_predictions: int = Field(
        200, ge=0, description="Test predictions sampled into the tracker's predictions table"
    )

    @field_validator("metric")
    @classmethod
    def _known_syntax(cls, value: str) -> str:
        return metrics.check_metric_syntax(value)


def score_predictions(
    y_true: np.ndarray, probabilities: np.ndarray, label_names: list[str], config: EvaluationConfig
) -> dict[str, Any]:
    """Every number of the report that depends only on labels and probabilities."""
    k = len(label_names)
    metric = metrics.parse_metric(config.metric, label_names)
    y_pred = probabilities.argmax(axis=1)
    counts = metrics.confusion(y_true, y_pred, k)
    classes = metrics.per_class(counts)
    low, high = metrics.bootstrap_interval(
        metric, y_true, y_pred, k, config.bootstrap_resamples, config.bootstrap_seed
    )
    return {
        "metric": config.metric,
        "value": metrics.score(metric, y_true, y_pred, k),
        "ci95": [low, high],
        "accuracy": float((y_true == y_pred).mean()),
        "ece": metrics.expected_calibration_error(probabilities, y_true),
        "per_class": {
            name: {key: float(classes[key][i]) for key in classes}
            for i, name in enumerate(label_names)
        },
        "confusion": counts.tolist(),
    }


def render_markdown(report: dict[str, Any]) -> str:
    name = metrics.metric_label(report["metric"])
    model, base = report["model"], report["baseline"]
    rows = [
        [
            label,
            f"{row['precision']:.4f}",
            f"{row['recall']:.4f}",
            f"{row['f1']:.4f}",
            int(row["support"]),
            f"{base['per_class'][label]['f1']:.4f}",
        ]
        for label, row in model["per_class"].items()
    ]
    lines = [
        f"**{name}: {model['value']:.4f}** (95 % CI {model['ci95'][0]:.4f}–{model['ci95'][1]:.4f}, "
        f"{report['test_rows']} test texts) · baseline TF-IDF + LR {base['value']:.4f} "
        f"(CI {base['ci95'][0]:.4f}–{base['ci95'][1]:.4f}) · transformer adds "
        f"**{model['value'] - base['value']:+.4f}**",
        "",
        f"accuracy {model['accuracy']:.4f} · expected calibration error {model['ece']:.4f} "
        f"({report['calibration']['ece_before']:.4f} before temperature scaling, "
        f"T = {report['calibration']['temperature']:.2f}) · "
        f"{report['speed']['samples_per_s']:.0f} texts/s batched · "
        f"{report['speed']['latency_ms_p50']:.1f} ms p50 / "
        f"{report['speed']['latency_ms_p95']:.1f} ms p95 one at a time",
        "",
        *markdown_table(["class", "precision", "recall", "F1", "support", "baseline F1"], rows),
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: the report, the test split with each text's prediction, the
    probabilities before temperature scaling, and the report as markdown and plots."""

    report: dict[str, Any]
    predictions: pl.DataFrame
    raw_probabilities: np.ndarray
    markdown: str
    images: dict[str, bytes]  # confusion_matrix, reliability_diagram (PNG)


def timed_one_at_a_time(predictor, texts: list[str]) -> np.ndarray:
    """Milliseconds to answer each of `texts` alone."""
    latencies = []
    for text in texts:
        started = time.perf_counter()
        predictor.predict_proba([text])
        latencies.append((time.perf_counter() - started) * 1000)
    return np.array(latencies)


def evaluate(
    model_dir,
    model: ModelManifest,
    splits: TextSplitsManifest,
    train: pl.DataFrame,
    test: pl.DataFrame,
    config: EvaluationConfig,
    log: Log,
) -> Evaluated:
    """The model in `model_dir` on the test split against a TF-IDF baseline trained on train."""
    label_names = model.label_names
    texts, y_true = test["text"].to_list(), test["label"].to_numpy()
    predictor = load_classifier(model_dir, model.max_length, micro_batch=config.batch_size)
    predictions = predict(predictor, texts, log, "test split")
    latencies = timed_one_at_a_time(predictor, texts[: config.latency_samples])
    log("scoring the TF-IDF baseline")
    baseline = tfidf_logistic_regression(train["text"].to_list(), train["label"].to_list(), texts)
    calibrated, raw = predictions.probabilities, predictions.raw_probabilities
    report = {
        "metric": config.metric,
        "test_rows": len(texts),
        "label_names": label_names,
        "model": score_predictions(y_true, calibrated, label_names, config),
        "calibration": {
            "temperature": predictions.temperature,
            "ece_before": metrics.expected_calibration_error(raw, y_true),
            "ece_after": metrics.expected_calibration_error(calibrated, y_true),
        },
        "baseline": score_predictions(
            y_true, np.eye(len(label_names))[baseline], label_names, config
        ),
        "speed": {
            "samples_per_s": len(texts) / predictions.seconds,
            "latency_ms_p50": float(np.percentile(latencies, 50)),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
        },
        "lineage": {
            "fine_tuned_model": model.version,
            "text_splits": splits.version,
            "test_hash": splits.test_hash,
        },
    }
    report["delta_vs_baseline"] = report["model"]["value"] - report["baseline"]["value"]
    curves = {"before scaling": raw, f"T = {predictions.temperature:.2f}": calibrated}
    images = {
        "confusion_matrix": confusion_matrix(np.array(report["model"]["confusion"]), label_names),
        "reliability_diagram": reliability_diagram(curves, y_true),
    }
    scored = test.with_columns(
        predicted=pl.Series(predictions.labels, dtype=pl.Int64),
        probabilities=pl.Series(predictions.probabilities.tolist(), dtype=pl.List(pl.Float32)),
    )
    return Evaluated(report, scored, raw, render_markdown(report), images)


def save_evaluation(store: ArtifactStore, prefix: str, evaluated: Evaluated) -> None:
    store.write_json(f"{prefix}/report.json", evaluated.report)
    store.write_bytes(f"{prefix}/report.md", (evaluated.markdown + "\n").encode())
    store.write_bytes(f"{prefix}/confusion_matrix.png", evaluated.images["confusion_matrix"])
    store.write_bytes(f"{prefix}/reliability.png", evaluated.images["reliability_diagram"])
    store.write_parquet(f"{prefix}/predictions.parquet", evaluated.predictions)


def report_metadata(evaluated: Evaluated) -> dict[str, Any]:
    """What the UI shows of the report: chartable numbers, the markdown, the plots."""
    report = evaluated.report
    metric, scores = report["metric"], report["model"]
    return {
        **numeric_metadata(
            {
                metric: scores["value"],
                f"{metric}_ci_low": scores["ci95"][0],
                f"{metric}_ci_high": scores["ci95"][1],
                "accuracy": scores["accuracy"],
                "ece": scores["ece"],
                "ece_before_scaling": report["calibration"]["ece_before"],
                "temperature": report["calibration"]["temperature"],
                f"baseline_{metric}": report["baseline"]["value"],
                "delta_vs_baseline": report["delta_vs_baseline"],
                **{f"f1/{name}": row["f1"] for name, row in scores["per_class"].items()},
                **report["speed"],
                "test_rows": report["test_rows"],
            }
        ),
        # the official metric by name, beside its value (the key above is the name too)
        "metric": dg.MetadataValue.text(metric),
        "report": dg.MetadataValue.md(evaluated.markdown),
        **{
            name: dg.MetadataValue.md(markdown_image(png, name.replace("_", " ")))
            for name, png in evaluated.images.items()
        },
        "fine_tuned_model_version": dg.MetadataValue.text(report["lineage"]["fine_tuned_model"]),
        "text_splits_version": dg.MetadataValue.text(report["lineage"]["text_splits"]),
    }


@dg.asset(
    group_name="model",
    kinds={"pytorch", "scikitlearn"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Test-split metrics of the fine-tuned model with bootstrap intervals, per-class "
    "scores, calibration, speed, and a TF-IDF baseline on the same split.",
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    store: ArtifactStore,
    tracker: ExperimentTracker,
    fine_tuned_model: ModelManifest,
    text_splits: TextSplitsManifest,
) -> dg.Output[ReportManifest]:
    require_trained_on(fine_tuned_model, text_splits, "evaluation_report")
    # a metric naming other classes stops here, before the model loads
    metrics.parse_metric(config.metric, fine_tuned_model.label_names)
    evaluated = evaluate(
        store.local_dir(fine_tuned_model.path),
        fine_tuned_model,
        text_splits,
        store.read_parquet(text_splits.paths["train"]),
        store.read_parquet(text_splits.paths["test"]),
        config,
        context.log.info,
    )
    evaluated.report["dagster_run_id"] = context.run_id
    # One report per evaluation run: its numbers (latency at least) are the run's own.
    version = run_version(fine_tuned_model.version, context.run_id)
    prefix = f"evaluation_report/{version}"
    save_evaluation(store, prefix, evaluated)
    tracked = tracker.log_evaluation(
        tracking_context(context, text_splits.version, fine_tuned_model.version),
        model_files(store, fine_tuned_model.path, {"model_version": fine_tuned_model.version}),
        tracked_evaluation(evaluated, config.tracked_predictions),
    )
    manifest = ReportManifest(
        version=version,
        path=prefix,
        metric=config.metric,
        value=evaluated.report["model"]["value"],
        model_version=fine_tuned_model.version,
        text_splits_version=text_splits.version,
        test_hash=text_splits.test_hash,
    )
    return as_output(
        manifest,
        report_metadata(evaluated)
        | {"path": dg.MetadataValue.path(store.uri(prefix))}
        | location_metadata(tracked),
    )


def tracked_evaluation(evaluated: Evaluated, sample: int) -> Evaluation:
    """The report as the tracker shows it: headline numbers, the confusion matrix, the
    per-class table, a seeded sample of test predictions, calibration per confidence bin."""
    report, predictions = evaluated.report, evaluated.predictions
    raw_probabilities = evaluated.raw_probabilities
    images = {
        "confusion_matrix_plot": evaluated.images["confusion_matrix"],
        "reliability_diagram": evaluated.images["reliability_diagram"],
    }
    names = report["label_names"]
    y_true = predictions["label"].to_numpy()
    calibrated = np.array(predictions["probabilities"].to_list())
    picked = predictions.sample(n=min(sample, predictions.height), seed=0)
    before = reliability_bins(raw_probabilities, y_true)
    after = reliability_bins(calibrated, y_true)
    return Evaluation(
        metrics=_flat(report)
        | {
            "calibration/ece_before": report["calibration"]["ece_before"],
            "calibration/ece_after": report["calibration"]["ece_after"],
            "calibration/temperature": report["calibration"]["temperature"],
        },
        label_names=names,
        y_true=y_true.tolist(),
        y_pred=predictions["predicted"].to_list(),
        per_class=[{"class": name, **row} for name, row in report["model"]["per_class"].items()],
        predictions=[
            {
                "text": row["text"],
                "label": names[row["label"]],
                "predicted": names[row["predicted"]],
                "probability": float(row["probabilities"][row["predicted"]]),
            }
            for row in picked.iter_rows(named=True)
        ],
        calibration=[{"scaling": "before", **b} for b in before]
        + [{"scaling": "after", **b} for b in after],
        images=images,
    )


def _flat(report: dict[str, Any]) -> dict[str, float]:
    flat = {
        f"test/{report['metric']}": report["model"]["value"],
        "test/ci_low": report["model"]["ci95"][0],
        "test/ci_high": report["model"]["ci95"][1],
        "test/accuracy": report["model"]["accuracy"],
        "test/ece": report["model"]["ece"],
        f"baseline/{report['metric']}": report["baseline"]["value"],
    }
    for label, row in report["model"]["per_class"].items():
        flat[f"test/f1/{label}"] = row["f1"]
    return flat
