"""`serving_variants`: the approved-to-be model exported to ONNX and quantized, each variant
checked for parity with PyTorch on the frozen test split, before the gate takes the registry's
lock (an export and a parity check take minutes; the gate's critical section takes moments)."""

import json
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from assets.interfaces.manifests import (
    MANIFEST_IO,
    ModelManifest,
    ReportManifest,
    ServingVariantsManifest,
    TextSplitsManifest,
    as_output,
    require_report_on,
    require_trained_on,
)
from assets.interfaces.store import ArtifactStore
from assets.metadata import markdown_table, numeric_metadata
from assets.model.metrics import metric_label, parse_metric
from assets.serving.export import Distillation, ParityRules, Quantization, export_and_check
from assets.versioning import run_version, source_version
from textops_core.inference import SERVING_FILE
from textops_core.live import VERIFICATION_FILE


class Int8Method(StrEnum):
    """How the int8 variant is made (assets/serving/quantize.py); an Enum where the choice may
    be null (Dagster reads an Optional Literal as no type at all)."""

    distilled = "distilled"
    smoothed = "smoothed"
    blockwise = "blockwise"
    static = "static"
    dynamic = "dynamic"


class ServingVariantsConfig(dg.Config):
    parity_tolerance: float = Field(
        0.01,
        ge=0,
        description="A variant is eligible when the lower 95 % bound of its paired difference "
        "with the PyTorch model on the official metric (same test texts, same bootstrap "
        "resamples) is at least -parity_tolerance; scoring higher never disqualifies it",
    )
    min_agreement: float = Field(
        0.99,
        ge=0,
        le=1,
        description="...and it labels at least this share of the test texts as PyTorch does (and "
        "every text of a 200-text sample the same alone as in a batch)",
    )
    bootstrap_resamples: int = Field(1000, ge=100, description="Resamples of the paired bootstrap")
    bootstrap_seed: int = Field(0, description="Seed of the paired bootstrap")
    quantization: Literal["distilled", "smoothed", "blockwise", "static", "dynamic"] = Field(
        "smoothed",
        description="How the int8 variant is made: distilled (an int8 student trained to give "
        "the model's answers through int8 arithmetic, quantization-aware, then quantized as "
        "smoothed), smoothed (static int8 after SmoothQuant's "
        "per-channel scales of strength smoothing_alpha, ranges calibrated on training texts), "
        "blockwise (int8 weights in blocks of block_size input channels, each token's "
        "activations quantized per block at run time from its own values), static (min-max "
        "ranges calibrated once on training texts); with any of these a text is answered the "
        "same alone or in any batch. dynamic: ranges from each call's batch",
    )
    quantization_fallback: Int8Method | None = Field(
        Int8Method.blockwise,
        description="Quantize again this way (distilled, smoothed, blockwise, static or dynamic) "
        "when the "
        "first int8 model fails parity; null: serve without int8 then",
    )
    smoothing_alpha: float = Field(
        0.85,
        ge=0,
        le=1,
        description="How much of each activation channel's range smoothed moves into the "
        "weights (0: none, 1: all)",
    )
    block_size: int = Field(
        64,
        description="Input channels per block of the blockwise quantization: 16, 32 or 64 (128 "
        "would answer a lone text otherwise than in a batch)",
    )
    calibration_texts: int = Field(
        512,
        ge=1,
        description="Training texts (a seeded sample of the train split) the smoothed and static "
        "quantizations calibrate on",
    )
    distill_texts: int = Field(
        4096,
        ge=1,
        description="Training texts (a seeded sample of the train split) the distilled int8 "
        "student learns the model's answers on",
    )
    distill_epochs: float = Field(
        2.0, gt=0, description="Passes of the distilled student over its training texts"
    )
    distill_learning_rate: float = Field(
        2e-5, gt=0, description="Peak learning rate of the distilled student"
    )
    distill_temperature: float = Field(
        2.0,
        gt=0,
        description="Temperature at which the distilled student matches the model's probabilities",
    )
    graph_optimizations: bool = Field(
        False,
        description="Apply ONNX Runtime's transformer fusions (attention, layer norm, GELU) "
        "before quantizing",
    )
    fp32_matmuls: list[str] | None = Field(
        None,
        description="Regular expressions of the MatMul nodes kept in fp32 in the int8 variant; "
        "unset: the method's default, none for smoothed and blockwise, the feed-forward output "
        "projections for static (the ones that move predictions most under per-tensor ranges, "
        "benchmarks/quantization.py)",
    )
    serving_variant: str = Field(
        "",
        description="Serve this variant (onnx-int8, onnx-fp32 or pytorch) whatever parity "
        "says; empty: the fastest that passes parity",
    )

    def parity_rules(self) -> ParityRules:
        return ParityRules(
            self.parity_tolerance, self.min_agreement, self.bootstrap_resamples, self.bootstrap_seed
        )

    def quantization_recipe(self) -> Quantization:
        """The int8 recipe; a bad block size or alpha fails here, before any work."""
        return Quantization(
            method=Int8Method(self.quantization).value,
            calibration_texts=self.calibration_texts,
            graph_optimizations=self.graph_optimizations,
            fp32_matmuls=None if self.fp32_matmuls is None else tuple(self.fp32_matmuls),
            block_size=self.block_size,
            alpha=self.smoothing_alpha,
            fallback=self.quantization_fallback and Int8Method(self.quantization_fallback).value,
            distillation=Distillation(
                texts=self.distill_texts,
                epochs=self.distill_epochs,
                batch_size=32,
                learning_rate=self.distill_learning_rate,
                temperature=self.distill_temperature,
                seed=self.bootstrap_seed,
            ),
        )


def variants_markdown(serving: dict[str, Any]) -> str:
    rows = [
        [
            f"**{name}**" if name == serving["variant"] else name,
            f"{score['value']:.4f}",
            (
                f"{score['delta']:+.4f} [{score['delta_low']:+.4f}, {score['delta_high']:+.4f}]"
                if "delta" in score
                else ""
            ),
            f"{score['agreement']:.2%}",
            margins(score),
            f"{score['batch_consistency']:.2%}" if "batch_consistency" in score else "",
            f"{score['texts_per_s']:.0f}",
            f"{score['alone_texts_per_s']:.0f}" if "alone_texts_per_s" in score else "",
            "yes" if score["passed"] else "**no**",
        ]
        for name, score in serving["variants"].items()
    ]
    header = [
        "variant",
        metric_label(serving["metric"]),
        "vs PyTorch [95 % CI]",
        "agreement",
        "margin over the floors",
        "alone = in batch",
        "texts/s in batches",
        "texts/s alone",
        "eligible",
    ]
    return "\n".join(
        [
            f"serving **{serving['variant']}**: {serving['why']}",
            "",
            *markdown_table(header, rows, align="lrrrrrrrc"),
            *(
                f"\nonnx-int8 first made {a['method']}: {a['reason']}; made again "
                f"{serving['quantization']['method']}"
                for a in serving.get("int8_attempts", [])
            ),
        ]
    )


def margins(score: dict[str, Any]) -> str:
    """How far a variant's agreement and paired lower bound are from their floors: "+0.60 pt,
    +0.0151"; empty for the reference itself."""
    if score.get("agreement_margin") is None or score.get("bound_margin") is None:
        return ""
    return f"{score['agreement_margin'] * 100:+.2f} pt, {score['bound_margin']:+.4f}"


def serving_metadata(serving: dict[str, Any]) -> dict[str, Any]:
    """What the UI shows of the variants: the one served, the table, chartable numbers."""
    return {
        "serving_variant": dg.MetadataValue.text(serving["variant"]),
        "serving_variants": dg.MetadataValue.md(variants_markdown(serving)),
        **numeric_metadata(
            {
                f"{name}/{key}": score[key]
                for name, score in serving["variants"].items()
                for key in (
                    "value",
                    "agreement",
                    "agreement_margin",
                    "bound_margin",
                    "texts_per_s",
                    "alone_texts_per_s",
                )
                if score.get(key) is not None
            }
        ),
    }


@dg.asset(
    group_name="serving",
    kinds={"onnx"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="The model exported to ONNX (fp32 and int8), every variant scored against "
    "PyTorch on the test split; the gate serves the fastest that passed.",
)
def serving_variants(
    context: dg.AssetExecutionContext,
    config: ServingVariantsConfig,
    store: ArtifactStore,
    fine_tuned_model: ModelManifest,
    evaluation_report: ReportManifest,
    text_splits: TextSplitsManifest,
) -> dg.Output[ServingVariantsManifest]:
    model = fine_tuned_model
    require_trained_on(model, text_splits, "serving_variants")
    require_report_on(evaluation_report, model, "serving_variants")
    quantization = config.quantization_recipe()
    test = store.read_parquet(text_splits.paths["test"])
    train = store.read_parquet(text_splits.paths["train"])
    calibration = train.sample(min(config.calibration_texts, train.height), seed=0)
    learning = train.sample(min(config.distill_texts, train.height), seed=1)
    version = run_version(model.version, context.run_id)
    path = f"serving_variants/{version}"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        shutil.copytree(store.local_dir(model.path), folder)
        serving = export_and_check(
            folder,
            test["text"].to_list(),
            test["label"].to_numpy(),
            parse_metric(evaluation_report.metric, model.label_names),
            model.max_length,
            config.parity_rules(),
            context.log.info,
            quantization,
            config.serving_variant,
            calibration["text"].to_list(),
            learning["text"].to_list() if quantization.distills() else [],
        )
        out = Path(scratch) / "variants"
        out.mkdir()
        shutil.copytree(folder / "onnx", out / "onnx")
        (out / VERIFICATION_FILE).write_text(json.dumps(serving.pop("verification")))
        (out / SERVING_FILE).write_text(json.dumps(serving, indent=2))
        store.upload_dir(path, out)
    manifest = ServingVariantsManifest(
        version=version,
        path=path,
        variant=serving["variant"],
        model_version=model.version,
        metric=evaluation_report.metric,
    )
    return as_output(
        manifest,
        {**serving_metadata(serving), "path": dg.MetadataValue.path(store.uri(path))},
    )
