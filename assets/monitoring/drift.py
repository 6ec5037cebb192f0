"""`drift_report`: served traffic compared with the training split of the model that served it."""

import json
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.manifests import (
    MANIFEST_IO,
    DriftManifest,
    ServingLogManifest,
    TextSplitsManifest,
    as_output,
)
from assets.interfaces.registry import ModelRegistry
from assets.interfaces.store import ArtifactStore
from assets.locations import location
from assets.metadata import markdown_table, numeric_metadata
from assets.monitoring import drift_metrics as dm
from assets.monitoring.log_window import read_window
from assets.monitoring.plots import length_histograms
from assets.monitoring.serving_log import MONITORING_FRESHNESS
from assets.plots import markdown_image
from assets.versioning import run_version, source_version


class DriftConfig(dg.Config):
    psi_threshold: float = Field(0.2, description="Text-length PSI above this is drift")
    alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Family-wise false-alarm rate of the drift tests (text-length KS, label-mix "
        "chi-square, embedding MMD): their p-values are Holm-adjusted together and a test whose "
        "adjusted p-value is below alpha is drift",
    )
    ks_statistic: float = Field(
        0.1, description="Text-length KS is drift only with a statistic above this as well"
    )
    unknown_share_increase: float = Field(
        0.01, description="Unknown-token share above the training share by more is drift"
    )
    embedding_sample: int = Field(256, ge=16, description="Texts embedded per side")
    permutations: int = Field(
        500,
        ge=99,
        description="Permutations of the embedding MMD test's p-value (the cosine distance of "
        "mean embeddings is reported as the size of the move)",
    )
    min_predictions: int = Field(
        50,
        ge=1,
        description="Fewest predictions of the serving model to judge drift on; with fewer the "
        "report says there is not enough traffic yet",
    )
    seed: int = Field(0, description="Seed of the embedding sample and of the permutations")


def load_encoder(model_dir):
    """The served model's transformers classifier (its encoder gives sentence embeddings) and
    its tokenizer."""
    from transformers import AutoTokenizer

    from textops_core.modeling import load_sequence_classifier

    return load_sequence_classifier(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


def mean_pooled_embeddings(model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """The encoder's mean-pooled last hidden state (the sentence embedding MiniLM was trained
    for), in length-sorted batches."""
    import torch

    from textops_core.inference import pad_batch, sorted_batches
    from textops_core.modeling import mean_pooled

    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id or 0
    with torch.inference_mode():
        for batch in sorted_batches([len(ids) for ids in encoded], 64):
            ids, mask = pad_batch([encoded[i] for i in batch], pad)
            out[batch] = mean_pooled(model, ids, mask).numpy()
    return out


# the findings whose p-values form the family that Holm's adjustment corrects together
TESTS = ("length_ks", "label_mix_chi2", "embedding_mmd")


def length_findings(train_lengths, served_lengths, config: DriftConfig) -> dict[str, Any]:
    psi = dm.population_stability_index(train_lengths, served_lengths)
    ks_stat, ks_p = dm.ks_test(train_lengths, served_lengths)
    return {
        "length_psi": {
            "value": psi,
            "threshold": config.psi_threshold,
            "drift": psi > config.psi_threshold,
        },
        "length_ks": {"value": ks_stat, "p_value": ks_p, "min_statistic": config.ks_statistic},
    }


def label_findings(train_labels, served_labels: list[str], label_names: list[str]) -> dict:
    prior = np.bincount(train_labels, minlength=len(label_names))
    index = {name: i for i, name in enumerate(label_names)}
    predicted = np.array([index[label] for label in served_labels if label in index])
    chi2, chi2_p = dm.label_mix_test(predicted, prior)
    return {
        "value": chi2,
        "p_value": chi2_p,
        "served_shares": {n: float(np.mean(predicted == i)) for n, i in index.items()},
        "train_shares": {n: float(prior[i] / prior.sum()) for n, i in index.items()},
    }


def embedding_findings(
    train_texts, served_texts, model, tokenizer, max_length: int, config: DriftConfig
) -> dict[str, Any]:
    """MMD between sentence embeddings of equal samples of both sides, with its permutation
    p-value; the cosine distance of their means as the size of the move."""
    rng = np.random.default_rng(config.seed)
    pick = min(config.embedding_sample, len(train_texts), len(served_texts))
    a = [train_texts[i] for i in rng.choice(len(train_texts), pick, replace=False)]
    b = [served_texts[i] for i in rng.choice(len(served_texts), pick, replace=False)]
    ea = mean_pooled_embeddings(model, tokenizer, a, max_length)
    eb = mean_pooled_embeddings(model, tokenizer, b, max_length)
    mmd, p_value = dm.mmd_permutation_test(ea, eb, config.permutations, config.seed)
    return {
        "value": mmd,
        "p_value": p_value,
        "cosine_distance": dm.mean_embedding_cosine_distance(ea, eb),
        "texts_per_side": pick,
    }


def judge_family(findings: dict[str, Any], config: DriftConfig) -> None:
    """Each test's Holm-adjusted p-value and verdict, in place."""
    adjusted = dm.holm_adjusted({n: findings[n]["p_value"] for n in TESTS if n in findings})
    for name, p_value in adjusted.items():
        findings[name]["adjusted_p_value"] = p_value
        findings[name]["alpha"] = config.alpha
        findings[name]["drift"] = p_value < config.alpha
    if "length_ks" in findings:
        ks = findings["length_ks"]
        ks["drift"] = ks["drift"] and ks["value"] > config.ks_statistic


def drift_findings(
    train: pl.DataFrame,
    served: pl.DataFrame,
    label_names: list[str],
    config: DriftConfig,
    tokenizer=None,
    model=None,
    max_length: int = 128,
    served_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Every drift statistic, each with its threshold or adjusted p-value and verdict; the
    statistics of texts (unknown tokens, embeddings) when `served_texts` (or a `text` column of
    `served`) has any."""
    findings = length_findings(
        train["text"].str.len_chars().to_numpy(), served["text_length"].to_numpy(), config
    )
    findings["label_mix_chi2"] = label_findings(
        train["label"].to_numpy(), served["label"].to_list(), label_names
    )
    if served_texts is None:
        served_texts = served["text"].drop_nulls().to_list() if "text" in served.columns else []
    if tokenizer is not None and served_texts:
        unk = tokenizer.unk_token_id
        train_texts = train["text"].to_list()
        train_unk = dm.unknown_token_share(tokenizer(train_texts)["input_ids"], unk)
        served_unk = dm.unknown_token_share(tokenizer(served_texts)["input_ids"], unk)
        findings["unknown_token_share"] = {
            "value": served_unk,
            "train": train_unk,
            "drift": served_unk - train_unk > config.unknown_share_increase,
        }
        if model is not None:
            findings["embedding_mmd"] = embedding_findings(
                train_texts, served_texts, model, tokenizer, max_length, config
            )
    judge_family(findings, config)
    return findings


def drift_markdown(findings: dict[str, Any], served_rows: int, drifted: bool) -> str:
    rows = []
    for name, finding in findings.items():
        detail = ", ".join(
            f"{k} {v:.4g}"
            for k, v in finding.items()
            if k not in {"value", "drift"} and isinstance(v, float | int)
        )
        rows.append(
            [name, f"{finding['value']:.4f}", detail, "**yes**" if finding["drift"] else "no"]
        )
    lines = [
        f"**{'drift detected' if drifted else 'no drift'}** over {served_rows} served predictions",
        "",
        *markdown_table(["statistic", "value", "detail", "drift"], rows, align="lrlc"),
    ]
    return "\n".join(lines)


def logged_texts(serving_log: ServingLogManifest, model_tag: str) -> list[str]:
    """The texts `model_tag` answered in the window, read from the service's log itself (the
    window's copy holds none); empty when the log keeps no texts or retention removed them."""
    if not serving_log.log_dir or not location(serving_log.log_dir).is_dir():
        return []
    frame = read_window(serving_log.log_dir, serving_log.since).frame.filter(
        (pl.col("ts") <= serving_log.until) & (pl.col("model_tag") == model_tag)
    )
    return frame["text"].drop_nulls().to_list()


def served_model_rows(served: pl.DataFrame) -> tuple[str, pl.DataFrame]:
    """The model that served the newest prediction, and the predictions it served: drift is
    judged for the model serving now, against the data it learned from."""
    tag = served.sort("ts")["model_tag"][-1]
    return tag, served.filter(pl.col("model_tag") == tag)


@dataclass
class DriftJudgement:
    """What drift_report found: its report (report.json), the files beside it, and the UI's
    view of it."""

    report: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # report.md, lengths.png
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        return self.report["summary"]


def too_little_traffic(predictions: int, model_tag: str | None, config: DriftConfig):
    """Too little traffic to judge: a report that says so, not a failure (a fresh deployment)."""
    summary = (
        f"not enough traffic yet: {predictions} predictions"
        + (f" of {model_tag}" if model_tag else "")
        + f"; drift is judged from {config.min_predictions} (min_predictions)"
    )
    report = {"judged": False, "drifted": False, "reasons": [], "summary": summary}
    return DriftJudgement(
        report, metadata={"report": dg.MetadataValue.md(f"**{summary.replace(': ', '**: ', 1)}")}
    )


def judge_drift(
    served: pl.DataFrame,
    model_tag: str,
    serving_log: ServingLogManifest,
    registry: ModelRegistry,
    store: ArtifactStore,
    config: DriftConfig,
) -> DriftJudgement:
    """The traffic `model_tag` served against the training split it learned from."""
    served_by = registry.get(model_tag)
    if "text_splits" not in served_by.metadata:
        raise MissingArtifactError(
            f"{model_tag} carries no text_splits lineage in the model store; approve a model "
            "with this version of textops to monitor it"
        )
    splits = TextSplitsManifest.model_validate(served_by.metadata["text_splits"])
    train = store.read_parquet(splits.paths["train"])
    model, tokenizer = load_encoder(served_by.path)
    findings = drift_findings(
        train, served, splits.label_names, config, tokenizer, model,
        int(served_by.metadata["max_length"]), logged_texts(serving_log, model_tag),
    )  # fmt: skip
    reasons = [name for name, f in findings.items() if f["drift"]]
    markdown = drift_markdown(findings, served.height, bool(reasons))
    plot = length_histograms(
        train["text"].str.len_chars().to_numpy(), served["text_length"].to_numpy()
    )
    report = {
        "judged": True,
        "drifted": bool(reasons),
        "reasons": reasons,
        "summary": markdown.split("\n")[0].replace("**", ""),
        "findings": findings,
        "model": model_tag,
        "text_splits": splits.version,
    }
    metadata = {
        "report": dg.MetadataValue.md(markdown + "\n\n" + markdown_image(plot, "text lengths")),
        "findings": dg.MetadataValue.json(json.loads(json.dumps(findings, default=float))),
        "model_tag": dg.MetadataValue.text(model_tag),
        "text_splits_version": dg.MetadataValue.text(splits.version),
        **numeric_metadata({name: float(f["value"]) for name, f in findings.items()}),
    }
    return DriftJudgement(report, {"report.md": markdown.encode(), "lengths.png": plot}, metadata)


@dg.asset(
    group_name="monitoring",
    kinds={"polars"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Served traffic vs the training split of the model that served it: text-length "
    "PSI and KS, unknown-token share, predicted-label mix (chi-square), sentence-embedding drift.",
    freshness_policy=MONITORING_FRESHNESS,
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    store: ArtifactStore,
    registry: ModelRegistry,
    serving_log: ServingLogManifest,
) -> dg.Output[DriftManifest]:
    logged = store.read_parquet(serving_log.path)
    model_tag, served = served_model_rows(logged) if logged.height else (None, logged)
    if served.height < config.min_predictions:
        judged = too_little_traffic(served.height, model_tag, config)
    else:
        judged = judge_drift(served, model_tag, serving_log, registry, store, config)
    judged.report |= {"serving_log": serving_log.version}
    if judged.report["judged"]:
        judged.report["other_models_rows"] = logged.height - served.height
    prefix = f"drift_report/{run_version(serving_log.version, context.run_id)}"
    store.write_json(f"{prefix}/report.json", judged.report)
    for name, content in judged.files.items():
        store.write_bytes(f"{prefix}/{name}", content)
    context.log.info(judged.headline)
    manifest = DriftManifest(
        version=prefix.split("/", 1)[1],
        path=f"{prefix}/report.json",
        judged=judged.report["judged"],
        drifted=judged.report["drifted"],
        reasons=judged.report["reasons"],
        predictions=served.height,
        model_tag=model_tag,
    )
    return as_output(
        manifest,
        {
            "drifted": manifest.drifted,
            "judged": manifest.judged,
            "reasons": dg.MetadataValue.json(manifest.reasons),
            **judged.metadata,
            **numeric_metadata({"served_predictions": served.height}),
            **latency_metadata(serving_log, model_tag),
        },
    )


def latency_metadata(serving_log: ServingLogManifest, model_tag: str | None) -> dict[str, Any]:
    """The latency of the model judged, as the service logged it (request percentiles, ms)."""
    latency = serving_log.latency_ms.get(model_tag or "", {})
    return numeric_metadata({f"latency_ms_{p}": latency.get(p) for p in ("p50", "p95", "p99")})
