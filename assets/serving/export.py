"""Serving variants of an approved model: an ONNX export, its int8 quantization, and the parity
check on the frozen test split that decides which one the service runs."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from assets.model import metrics
from assets.progress import Log
from assets.serving.quantize import FFN_OUTPUT, check_alpha, check_block_size

# Variants in the order the service prefers them when equally fast: quantized, then exact ONNX,
# then the PyTorch model itself (the reference every other variant is checked against).
CANDIDATES = ("onnx-int8", "onnx-fp32")
CONSISTENCY_SAMPLE = 200


@dataclass(frozen=True)
class ParityRules:
    """When a variant may stand in for the PyTorch model: not worse beyond noise on the official
    metric (the paired bootstrap's lower bound of variant - PyTorch on the same test texts, the
    gate's machinery), agreeing with it on nearly every text, and answering a text the same way
    alone or in a batch. Scoring higher never disqualifies a variant. Made by
    ServingVariantsConfig.parity_rules() (assets/serving/variants.py), where the defaults are."""

    tolerance: float  # the lower bound must reach -tolerance
    min_agreement: float  # share of test texts labelled as PyTorch labels them
    resamples: int
    seed: int


# MatMuls each method keeps in fp32 unless told otherwise: static int8's per-tensor ranges cannot
# hold the feed-forward output projections' input (GELU outputs with outlier channels) without
# moving predictions; smoothing moves those channels' range into the weights, and blockwise int8
# scales each token's blocks on their own: both keep none.
DEFAULT_FP32_MATMULS = {
    "distilled": (),
    "smoothed": (),
    "blockwise": (),
    "static": (FFN_OUTPUT,),
    "dynamic": (),
}


@dataclass(frozen=True)
class Distillation:
    """How the `distilled` int8 student learns from its fp32 parent (assets/serving/distill.py):
    `epochs` passes over `texts` training texts in batches of `batch_size`, at
    `learning_rate` (a tenth warming up, then a linear decay), matching the parent's
    probabilities at `temperature`, seeded by `seed`. Made by
    ServingVariantsConfig.quantization_recipe(), where the defaults are."""

    texts: int
    epochs: float
    batch_size: int
    learning_rate: float
    temperature: float
    seed: int

    def steps(self, texts: int) -> int:
        """Batches that show each of `texts` texts about `epochs` times."""
        return max(1, math.ceil(texts * self.epochs / self.batch_size))


@dataclass(frozen=True)
class Quantization:
    """How the int8 variant is made (assets/serving/quantize.py; benchmarks/quantization.py
    measures the recipes side by side). `smoothed`: static int8 after SmoothQuant's channel
    scales (strength `alpha`), ranges calibrated on `calibration_texts` training texts at their
    99.999th percentile; `blockwise`: int8 weights in blocks of `block_size` input channels,
    each token's activations quantized per block at run time from its own values; `static`:
    activations' min-max ranges calibrated once; all three answer a text the same alone or in
    any batch. `dynamic`: ranges taken from each call's batch. `fp32_matmuls`: regular
    expressions of the MatMul nodes that stay in fp32 (None: the method's default,
    DEFAULT_FP32_MATMULS). `fallback`: the method tried when the first one's int8 model fails
    parity (None, or the method itself: none). Made by ServingVariantsConfig.quantization_recipe()
    (assets/serving/variants.py), where the defaults are."""

    method: str
    calibration_texts: int
    graph_optimizations: bool
    fp32_matmuls: tuple[str, ...] | None
    block_size: int
    alpha: float
    fallback: str | None
    distillation: Distillation

    def __post_init__(self) -> None:
        methods = ", ".join(DEFAULT_FP32_MATMULS)
        if self.method not in DEFAULT_FP32_MATMULS:
            raise ValueError(f"quantization must be one of {methods}, got {self.method!r}")
        if self.fallback and self.fallback not in DEFAULT_FP32_MATMULS:
            raise ValueError(f"fallback must be one of {methods}, got {self.fallback!r}")
        if self.fallback == self.method:  # blockwise with the default fallback: no fallback
            object.__setattr__(self, "fallback", None)
        if "blockwise" in (self.method, self.fallback):
            check_block_size(self.block_size)
        if self.method in ("smoothed", "distilled"):
            check_alpha(self.alpha)

    def kept_in_fp32(self) -> tuple[str, ...]:
        if self.fp32_matmuls is None:
            return DEFAULT_FP32_MATMULS[self.method]
        return self.fp32_matmuls

    def distills(self) -> bool:
        """Whether an int8 student is trained, first or as the fallback."""
        return "distilled" in (self.method, self.fallback)

    def falling_back(self) -> Quantization:
        """The same settings on the fallback method, with no further fallback."""
        return replace(self, method=self.fallback, fallback=None)


@dataclass
class VariantScore:
    variant: str
    value: float  # the official metric on the test split
    agreement: float  # share of test texts labelled as the PyTorch model labels them
    texts_per_s: float  # in batches of 32, this machine, tokenization included
    passed: bool
    reason: str
    # share of a sample labelled the same alone as inside its batch (activations quantized per
    # call would let a text's neighbours move a close call)
    batch_consistency: float | None = None
    # variant - PyTorch on the official metric, with its paired 95 % interval
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    # texts/s answered one at a time (the consistency sample): the service's batches at low load
    alone_texts_per_s: float | None = None
    # how far each number is from its floor, positive when it clears it: agreement minus
    # min_agreement, and the paired lower bound minus -tolerance
    agreement_margin: float | None = None
    bound_margin: float | None = None

    def speed(self) -> float:
        """What the choice ranks by: the geometric mean of texts/s in batches of 32 (the service
        under load) and one text at a time (the service at low load), where both were
        measured."""
        if self.alone_texts_per_s is None:
            return self.texts_per_s
        return float(np.sqrt(self.texts_per_s * self.alone_texts_per_s))


# The attention the export traces. PyTorch's scaled_dot_product_attention exports as a masked
# Where (with an IsNaN guard) over every layer's (batch, heads, length, length) scores; eager
# attention adds the mask once as a bias, gives the same labels and runs int8 faster
# (benchmarks/quantization.py's SDPA recipes; docs/measurements.md).
EXPORT_ATTENTION = "eager"


def export_onnx(model_dir: Path, path: Path, attention: str = EXPORT_ATTENTION) -> None:
    """The classifier as ONNX (opset 17, dynamic batch and sequence length; inputs input_ids
    and attention_mask, output logits) with torch's TorchScript exporter, from the model's
    `attention` (transformers' attn_implementation; EXPORT_ATTENTION by default)."""
    import torch

    from textops_core.inference import TextEncoder, pad_ids
    from textops_core.modeling import load_sequence_classifier

    model = load_sequence_classifier(model_dir, attn_implementation=attention).eval()
    encoder = TextEncoder(model_dir, 32)
    ids, mask = pad_ids(encoder.encode(["a short text", "a somewhat longer example text"]), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
        )


def quantize_int8(
    model_dir: Path,
    source: Path,
    path: Path,
    quantization: Quantization,
    calibration_texts: list[str],
    max_length: int,
    training_texts: list[str] | None = None,
    log: Log = print,
) -> dict[str, Any] | None:
    """The int8 variant of the fp32 export `source`, written to `path`, by `quantization`;
    `distilled` first trains an int8 student on `training_texts` and quantizes the student's
    export instead (returned: what its training took)."""
    from assets.serving import quantize

    patterns = quantization.kept_in_fp32()
    with tempfile.TemporaryDirectory() as scratch:
        base, distilled = source, None
        if quantization.method == "distilled":
            from assets.serving.distill import distill_student

            trained = distill_student(
                model_dir,
                Path(scratch) / "student",
                training_texts or calibration_texts,
                calibration_texts,
                max_length,
                quantization.distillation,
                quantization.alpha,
                log,
            )
            base = Path(scratch) / "student.onnx"
            export_onnx(trained.student_dir, base)
            distilled = {k: v for k, v in asdict(trained).items() if k != "student_dir"}
        if quantization.graph_optimizations:
            base = quantize.optimized(source, Path(scratch) / "optimized.onnx", model_dir)
        if quantization.method == "dynamic":
            quantize.dynamic_int8(base, path)
            return None
        keep = quantize.matching_nodes(quantize.matmul_nodes(base), patterns)
        if quantization.method == "blockwise":
            quantize.blockwise_int8(base, path, quantization.block_size, keep)
            return None
        calibration = quantize.Calibration(model_dir, calibration_texts, max_length)
        if quantization.method in ("smoothed", "distilled"):
            quantize.smoothed_int8(base, path, calibration, quantization.alpha, keep)
            return distilled
        quantize.static_int8(base, path, calibration, keep)
    return None


@dataclass(frozen=True)
class Alone:
    """The consistency sample's texts answered one at a time: their labels and the pace."""

    labels: np.ndarray
    texts_per_s: float


def answer_alone(predictor, texts: list[str], passes: int = 2) -> Alone:
    """The first CONSISTENCY_SAMPLE texts, each answered in a call of its own (after one
    untimed warm-up call); the pace of the fastest of `passes` passes (a pass takes about a
    second, and a neighbour's burst on a shared machine slows one of them), the labels of the
    first."""
    sample = texts[:CONSISTENCY_SAMPLE]
    predictor.predict_proba(sample[:1])
    seconds, labels = [], []
    for _ in range(passes):
        started = time.perf_counter()
        labels.append(np.array([predictor.predict_proba([text])[0].argmax() for text in sample]))
        seconds.append(time.perf_counter() - started)
    return Alone(labels[0], len(sample) / min(seconds))


def batch_consistency(alone: Alone, batched_labels: np.ndarray) -> float:
    """Share of the sample labelled alone as it was in its batch."""
    return float((alone.labels == batched_labels[: len(alone.labels)]).mean())


def parity(
    variant: str,
    reference_labels: np.ndarray,
    probabilities: np.ndarray,
    y_true: np.ndarray,
    metric: metrics.Metric,
    rules: ParityRules,
    texts_per_s: float,
    batch_consistency: float,
    alone_texts_per_s: float | None = None,
) -> VariantScore:
    """A variant passes when it is not worse than PyTorch beyond `rules.tolerance` (paired
    bootstrap lower bound), agrees with it on `rules.min_agreement` of the texts, and labels
    every text of the sample the same alone as in a batch."""
    labels = probabilities.argmax(axis=1)
    k = probabilities.shape[1]
    value = metrics.score(metric, y_true, labels, k)
    delta, low, high = metrics.paired_bootstrap(
        metric, y_true, labels, reference_labels, k, rules.resamples, rules.seed
    )
    agreement = float((labels == reference_labels).mean())
    agreement_margin, bound_margin = agreement - rules.min_agreement, low + rules.tolerance
    failed = []
    if bound_margin < 0:
        failed.append(f"lower bound {low:+.4f} below -{rules.tolerance:g}")
    if agreement_margin < 0:
        failed.append(f"agreement {agreement:.2%} below {rules.min_agreement:.0%}")
    if batch_consistency < 1.0:
        failed.append(f"{batch_consistency:.2%} of texts labelled alone as in a batch")
    reason = (
        f"{metric.name} {value:.4f}, paired {delta:+.4f} vs PyTorch "
        f"[CI {low:+.4f} to {high:+.4f}; floor -{rules.tolerance:g}, margin {bound_margin:+.4f}], "
        f"agreement {agreement:.2%} (floor {rules.min_agreement:.1%}, margin "
        f"{agreement_margin * 100:+.2f} points)"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return VariantScore(
        variant,
        value,
        agreement,
        texts_per_s,
        not failed,
        reason,
        batch_consistency,
        delta,
        low,
        high,
        alone_texts_per_s,
        agreement_margin,
        bound_margin,
    )


def pace(score: VariantScore) -> str:
    if score.alone_texts_per_s is None:
        return f"{score.texts_per_s:.0f} texts/s"
    return f"{score.texts_per_s:.0f} texts/s in batches, {score.alone_texts_per_s:.0f} alone"


def choose(scores: list[VariantScore], pinned: str = "") -> tuple[str, str]:
    """The variant to serve and why: the pinned one, else the fastest that passed parity (the
    PyTorch reference always passes), fastest by VariantScore.speed: a variant quick in big
    batches but slow on lone texts (or the reverse) serves one load well and the other badly."""
    by_name = {score.variant: score for score in scores}
    if pinned:
        if pinned not in by_name:
            raise ValueError(f"serving_variant {pinned!r} is not one of {', '.join(by_name)}")
        return pinned, f"pinned by serving_variant ({by_name[pinned].reason})"
    passed = [score for score in scores if score.passed]
    best = max(passed, key=VariantScore.speed)
    failed = [f"{s.variant}: {s.reason}" for s in scores if not s.passed]
    why = f"fastest that passed parity ({pace(best)})"
    return best.variant, why + (f"; failed: {'; '.join(failed)}" if failed else "")


def measured(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the unset ones: the model store takes no None in metadata."""
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class ParityCheck:
    """Every variant of the model in `model_dir` scored against its PyTorch self on the test
    texts, and the labels each gave on the verification sample."""

    model_dir: Path
    texts: list[str]
    y_true: np.ndarray
    metric: metrics.Metric
    max_length: int
    rules: ParityRules
    log: Log
    recorded: dict[str, dict[str, list]] = field(default_factory=dict)
    reference_labels: np.ndarray | None = None
    distilled: dict[str, Any] | None = None  # the int8 student's training, when it had one

    def __post_init__(self) -> None:
        self.sample = verification_sample(len(self.texts))

    def quantize(
        self, how: Quantization, calibration_texts: list[str], training_texts: list[str]
    ) -> None:
        from textops_core.inference import VARIANT_FILES

        started = time.monotonic()
        self.distilled = quantize_int8(
            self.model_dir,
            self.model_dir / VARIANT_FILES["onnx-fp32"],
            self.model_dir / VARIANT_FILES["onnx-int8"],
            how,
            calibration_texts,
            self.max_length,
            training_texts,
            self.log,
        )
        seconds = time.monotonic() - started
        self.log(f"quantized the ONNX export to int8 ({how.method}) in {seconds:.0f} s")

    def reference(self) -> VariantScore:
        """The PyTorch model itself: the labels every other variant is checked against."""
        from assets.model.predict import load_classifier, predict

        predictor = load_classifier(self.model_dir, self.max_length, "pytorch", micro_batch=32)
        answered = predict(predictor, self.texts, self.log, "parity: pytorch")
        self.reference_labels = answered.labels
        self.recorded["pytorch"] = recorded_labels(answered.probabilities, self.sample)
        k = answered.probabilities.shape[1]
        return VariantScore(
            "pytorch",
            metrics.score(self.metric, self.y_true, answered.labels, k),
            1.0,
            len(self.texts) / answered.seconds,
            True,
            "the reference",
            alone_texts_per_s=answer_alone(predictor, self.texts).texts_per_s,
        )

    def score(self, variant: str) -> VariantScore:
        from assets.model.predict import load_classifier, predict

        predictor = load_classifier(self.model_dir, self.max_length, variant, micro_batch=32)
        predicted = predict(predictor, self.texts, self.log, f"parity: {variant}")
        alone = answer_alone(predictor, self.texts)
        self.recorded[variant] = recorded_labels(predicted.probabilities, self.sample)
        score = parity(
            variant,
            self.reference_labels,
            predicted.probabilities,
            self.y_true,
            self.metric,
            self.rules,
            len(self.texts) / predicted.seconds,
            batch_consistency(alone, predicted.labels),
            alone.texts_per_s,
        )
        self.log(f"{variant}: {score.reason}, {pace(score)}")
        return score


def serving_record(
    check: ParityCheck,
    scores: list[VariantScore],
    quantization: Quantization,
    attempts: list[dict[str, Any]],
    chosen: tuple[str, str],
) -> dict[str, Any]:
    """serving.json (textops_core/inference.py): the variant chosen, why, every variant's
    numbers and what they were measured under, and the verification sample."""
    from textops_core.inference import label_names
    from textops_core.runtime import installed_versions

    return {
        "variant": chosen[0],
        "why": chosen[1],
        "max_length": check.max_length,
        "metric": check.metric.name,
        "rules": asdict(check.rules),
        "quantization": {
            **measured(asdict(quantization)),
            "fp32_matmuls": list(quantization.kept_in_fp32()),
            **({"distilled": check.distilled} if check.distilled else {}),
        },
        "int8_attempts": [measured(a) for a in attempts],
        "test_rows": len(check.texts),
        # what the numbers below were measured under; the service warns when it runs otherwise
        "runtime": measured(installed_versions()),
        "variants": {score.variant: measured(asdict(score)) for score in scores},
        # popped by the asset into verification.json, which the service checks before serving
        "verification": {
            "texts": [check.texts[i] for i in check.sample],
            "variants": {
                v: labels for v, labels in check.recorded.items() if by_name(scores, v).passed
            },
            "label_mix": label_mix(check.reference_labels, label_names(check.model_dir)),
        },
    }


def export_and_check(
    model_dir: Path,
    texts: list[str],
    y_true: np.ndarray,
    metric: metrics.Metric,
    max_length: int,
    rules: ParityRules,
    log: Log,
    quantization: Quantization,
    pinned: str = "",
    calibration_texts: list[str] | None = None,
    training_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Export and quantize the model in `model_dir` (written to its `onnx/` folder; static
    quantization calibrates on `calibration_texts`, training texts; a distilled one also
    learns from `training_texts`), score every variant on the
    test texts side by side, and return the serving settings (serving.json): the chosen
    variant, why, and every variant's numbers. An int8 model that fails parity is made again
    by the fallback method, once."""
    from textops_core.inference import VARIANT_FILES

    export_onnx(model_dir, model_dir / VARIANT_FILES["onnx-fp32"])
    check = ParityCheck(model_dir, texts, y_true, metric, max_length, rules, log)
    check.quantize(quantization, calibration_texts or [], training_texts or [])
    scores = [check.reference()]
    attempts = []  # int8 models that failed parity before the one kept
    for variant in CANDIDATES:
        score = check.score(variant)
        if variant == "onnx-int8" and not score.passed and quantization.fallback:
            attempts.append({"method": quantization.method, **asdict(score)})
            quantization = quantization.falling_back()
            log(f"onnx-int8 failed parity; quantizing again, {quantization.method}")
            check.quantize(quantization, calibration_texts or [], training_texts or [])
            score = check.score(variant)
        scores.append(score)
    variant, why = choose(scores, pinned)
    log(f"serving {variant}: {why}")
    return serving_record(check, scores, quantization, attempts, (variant, why))


VERIFICATION_TEXTS = 64


def verification_sample(n: int, size: int = VERIFICATION_TEXTS) -> list[int]:
    """Test-text indices the service re-labels before it serves the model (seeded)."""
    return sorted(np.random.default_rng(0).permutation(n)[:size].tolist())


def recorded_labels(probabilities: np.ndarray, sample: list[int]) -> dict[str, list]:
    """A variant's labels on the sample, and how far each was from a tie (top two classes)."""
    chosen = probabilities[sample]
    top = np.sort(chosen, axis=1)
    return {
        "labels": chosen.argmax(axis=1).tolist(),
        "margins": [round(float(m), 6) for m in top[:, -1] - top[:, -2]],
    }


def label_mix(labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Share of each class among the model's own predictions on the test split."""
    counts = np.bincount(labels, minlength=len(names))
    return {name: float(c) / max(len(labels), 1) for name, c in zip(names, counts, strict=True)}


def by_name(scores: list[VariantScore], variant: str) -> VariantScore:
    return next(score for score in scores if score.variant == variant)
