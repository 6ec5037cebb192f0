"""Int8 recipes for the serving model, side by side in one run against the PyTorch model on the
test split: agreement, the paired difference of the official metric with its 95 % interval,
batch consistency (a text labelled the same alone as in a batch) and texts/s in process
(length-sorted batches of 32, tokenization included) and one text at a time (the 200 texts of
the consistency sample), each the fastest of 3 passes taken in turn across the recipes.

    python benchmarks/quantization.py --model-tag textops-classifier:<version>
    python benchmarks/quantization.py --model-dir <a fine_tuned_model folder> --task hate

Recipes: the plain fp32 export; ONNX Runtime's transformer graph optimizations (fused attention,
layer norm and GELU); dynamic int8 (activations quantized per call); static int8 (QDQ,
activations calibrated once on training texts, min-max or percentile ranges), with and without
the optimizations, and with the feed-forward output projections kept in fp32; smoothed int8
(static, percentile, after SmoothQuant's channel scales) at each --alphas; blockwise int8
(MatMulNBits: weights and each token's activations quantized per block of input channels) at
each block width; fp32 and the default smoothed recipe exported from each --attention
implementation other than the pipeline's (eager); distilled int8 (an int8 student trained,
quantization-aware, to give the model's answers, then quantized as smoothed; its training time is
printed); with --keep-layers N, also static int8 keeping in fp32 the N whole layers that move
predictions most. --only keeps the recipes whose names contain one of its words (fp32 is always
kept: the speeds are ratios to it).

    python benchmarks/quantization.py --model-dir <folder> --only "alpha 0.85" blockwise distilled
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "tweeteval"
PASSES = 3  # timed passes over the test texts per recipe, interleaved across recipes

from assets.serving.quantize import (  # noqa: E402
    BLOCK_SIZES,
    FFN_OUTPUT,
    Calibration,
    blockwise_int8,
    dynamic_int8,
    matching_nodes,
    matmul_nodes,
    optimized,
    smoothed_int8,
    static_int8,
)
from assets.serving.variants import ServingVariantsConfig  # noqa: E402


def task_data(task: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(test texts, test labels, training texts) of a TweetEval task."""
    from assets.data.sources.formats import read_tweeteval, tweeteval_file_names

    folder = SHARED / task
    if not folder.is_dir():
        folder = ROOT / "assets" / "data" / "sources" / "embedded" / "tweeteval" / task
    files = {name: (folder / name).read_bytes() for name in tweeteval_file_names()}
    frame = read_tweeteval(files, str(folder)).frame
    test = frame.filter(frame["source_split"] == "test")
    train = frame.filter(frame["source_split"] == "train")
    return test["text"].to_list(), test["label"].to_numpy(), train["text"].to_list()


class Timed:
    """A recipe's predictor with its answers (untimed) and the fastest of its timed passes."""

    def __init__(self, path: Path, model_dir: Path, texts, max_length: int):
        from assets.serving.export import answer_alone
        from textops_core.inference import (
            OnnxClassifier,
            Predictor,
            TextEncoder,
            calibrated_temperature,
            label_names,
        )

        self.predictor = Predictor(
            OnnxClassifier(path, 0),
            TextEncoder(model_dir, max_length),
            len(label_names(model_dir)),
            32,
            calibrated_temperature(model_dir),
        )
        self.texts = texts
        self.probabilities = self.predictor.predict_proba(texts)
        self.alone = answer_alone(self.predictor, texts, passes=1)
        self.seconds, self.alone_texts_per_s = float("inf"), 0.0

    def time_pass(self) -> None:
        """One pass in batches of 32 and one over the sample one text at a time."""
        from assets.serving.export import answer_alone

        started = time.perf_counter()
        self.predictor.predict_proba(self.texts)
        self.seconds = min(self.seconds, time.perf_counter() - started)
        alone = answer_alone(self.predictor, self.texts, passes=1).texts_per_s
        self.alone_texts_per_s = max(self.alone_texts_per_s, alone)

    def score(self, name: str, y_true, reference, metric) -> dict:
        """The parity check's numbers (assets/serving/export.py), at the fastest passes."""
        from dataclasses import asdict

        from assets.serving.export import batch_consistency, parity
        from assets.serving.variants import ServingVariantsConfig

        score = parity(
            name,
            reference,
            self.probabilities,
            y_true,
            metric,
            ServingVariantsConfig().parity_rules(),
            len(self.texts) / self.seconds,
            batch_consistency(self.alone, self.probabilities.argmax(axis=1)),
            self.alone_texts_per_s,
        )
        return asdict(score)


def measure(path: Path, model_dir: Path, texts, y_true, reference, metric, max_length) -> dict:
    """One recipe on its own, timed over PASSES passes."""
    timed = Timed(path, model_dir, texts, max_length)
    for _ in range(PASSES):
        timed.time_pass()
    return timed.score(path.stem, y_true, reference, metric)


def layer_nodes(nodes: list[str], layers: list[int]) -> list[str]:
    """The MatMuls of whole encoder layers (exported names hold `/layer.<i>/`)."""
    return matching_nodes(nodes, [rf"/layer\.{layer}/" for layer in layers])


def encoder_layers(nodes: list[str]) -> list[int]:
    return sorted({int(n.split("/layer.")[1].split("/")[0]) for n in nodes if "/layer." in n})


def most_sensitive_layers(
    fp32: Path, model_dir, calibration, texts, y_true, reference, metric, max_length, scratch,
    method: str,
) -> list[int]:  # fmt: skip
    """Encoder layers whose MatMuls kept in fp32 raise agreement most (one static model per
    layer kept, scored on the first 1,000 test texts)."""
    nodes = matmul_nodes(fp32)
    subset, ref = texts[:1000], reference[:1000]
    gains = {}
    for layer in encoder_layers(nodes):
        keep = layer_nodes(nodes, [layer])
        path = static_int8(fp32, scratch / f"keep-{layer}.onnx", calibration, keep, method)
        gains[layer] = measure(path, model_dir, subset, y_true[:1000], ref, metric, max_length)[
            "agreement"
        ]
        print(f"  layer {layer} kept in fp32: agreement {gains[layer]:.2%}", flush=True)
    return sorted(gains, key=gains.get, reverse=True)


def distilled_int8(
    model_dir: Path, train, calibration_texts, calibration, max_length, alpha, epochs, scratch
) -> Path:
    """The pipeline's distilled recipe (assets/serving/export.quantize_int8) at `epochs`."""
    from assets.serving.distill import distill_student
    from assets.serving.export import export_onnx

    how = ServingVariantsConfig(distill_epochs=epochs).quantization_recipe().distillation
    rng = np.random.default_rng(1)
    texts = [train[i] for i in rng.choice(len(train), min(how.texts, len(train)), False)]
    started = time.monotonic()
    done = distill_student(
        model_dir, scratch / "student", texts, calibration_texts, max_length, how, alpha, print
    )
    print(
        f"distilled: {done.steps} steps on {done.texts} texts, {time.monotonic() - started:.0f} s "
        f"in all ({done.seconds:.0f} s training), loss {done.first_loss:.5f} -> "
        f"{done.last_loss:.5f}",
        flush=True,
    )
    export_onnx(done.student_dir, scratch / "student.onnx")
    return smoothed_int8(scratch / "student.onnx", scratch / "distilled.onnx", calibration, alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-tag", default="")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--task", default="hate")
    parser.add_argument("--metric", default="macro_f1")
    parser.add_argument("--calibration-texts", type=int, default=512)
    parser.add_argument(
        "--keep-layers", type=int, default=0, help="also: the N most sensitive layers in fp32"
    )
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.5, 0.75, 0.85], help="smoothing strengths"
    )
    parser.add_argument(
        "--attention",
        nargs="*",
        default=["sdpa"],
        help="also: fp32 and the default int8 recipe exported from these attention "
        "implementations (the recipes above use the pipeline's export, EXPORT_ATTENTION)",
    )
    parser.add_argument(
        "--only", nargs="*", default=[], help="keep the recipes whose name holds one of these"
    )
    parser.add_argument(
        "--distill-epochs",
        type=float,
        default=ServingVariantsConfig().distill_epochs,
        help="passes of the distilled student over its training texts (0: no distilled recipe)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from assets.model import metrics
    from assets.model.predict import load_classifier, predict
    from assets.serving.export import EXPORT_ATTENTION, export_onnx
    from textops_core.inference import label_names, serving_settings

    if args.model_tag:
        import bentoml

        model_dir = Path(bentoml.models.get(args.model_tag).path)
    else:
        model_dir = args.model_dir
    max_length = int(serving_settings(model_dir).get("max_length", 128))
    texts, y_true, train = task_data(args.task)
    metric = metrics.parse_metric(args.metric, label_names(model_dir))
    rng = np.random.default_rng(0)
    calibration_texts = [train[i] for i in rng.choice(len(train), args.calibration_texts, False)]
    reference = predict(
        load_classifier(model_dir, max_length, "pytorch", micro_batch=32), texts
    ).labels
    scratch = Path(tempfile.mkdtemp(prefix="textops-quant-"))
    fp32 = scratch / "model.onnx"
    export_onnx(model_dir, fp32)
    calibration = Calibration(model_dir, calibration_texts, max_length)
    fused = optimized(fp32, scratch / "model.opt.onnx", model_dir)
    ffn_output = matching_nodes(matmul_nodes(fp32), [FFN_OUTPUT])
    recipes = {
        "fp32": lambda: fp32,
        "fp32 + graph optimizations": lambda: fused,
        "int8 dynamic": lambda: dynamic_int8(fp32, scratch / "dynamic.onnx"),
        "int8 dynamic + graph optimizations": lambda: dynamic_int8(
            fused, scratch / "dynamic.opt.onnx"
        ),
        "int8 static (QDQ, min-max)": lambda: static_int8(
            fp32, scratch / "static.onnx", calibration
        ),
        "int8 static (QDQ, percentile)": lambda: static_int8(
            fp32, scratch / "static.pct.onnx", calibration, method="percentile"
        ),
        "int8 static (QDQ, min-max) + graph optimizations": lambda: static_int8(
            fused, scratch / "static.opt.onnx", calibration
        ),
        "int8 static (QDQ, min-max), FFN output in fp32": lambda: static_int8(
            fp32, scratch / "static.ffn.onnx", calibration, ffn_output
        ),
        "int8 static (QDQ, percentile), FFN output in fp32": lambda: static_int8(
            fp32, scratch / "static.pct.ffn.onnx", calibration, ffn_output, "percentile"
        ),
        **{
            f"int8 smoothed (alpha {alpha}, percentile)": (
                lambda alpha=alpha: smoothed_int8(
                    fp32, scratch / f"smoothed.{alpha}.onnx", calibration, alpha
                )
            )
            for alpha in args.alphas
        },
        **{
            f"int8 blockwise ({size}-wide blocks)": (
                lambda size=size: blockwise_int8(fp32, scratch / f"blockwise.{size}.onnx", size)
            )
            for size in BLOCK_SIZES
        },
    }
    alpha = ServingVariantsConfig().smoothing_alpha
    if args.distill_epochs:
        recipes[f"int8 distilled ({args.distill_epochs:g} epochs, alpha {alpha})"] = lambda: (
            distilled_int8(model_dir, train, calibration_texts, calibration, max_length, alpha,
                           args.distill_epochs, scratch)
        )  # fmt: skip
    for attention in [a for a in args.attention if a != EXPORT_ATTENTION]:
        other = scratch / f"model.{attention}.onnx"
        export_onnx(model_dir, other, attention)
        recipes[f"fp32, {attention} export"] = lambda other=other: other
        recipes[f"int8 smoothed (alpha {alpha}, percentile), {attention} export"] = (
            lambda other=other, attention=attention: smoothed_int8(
                other, scratch / f"smoothed.{attention}.onnx", calibration, alpha
            )
        )
    results = {}
    header = (
        "| recipe | agreement | delta vs PyTorch [95 % CI] | alone = in batch | texts/s "
        "in batches | texts/s alone |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    )

    def line(name: str, r: dict) -> str:
        return (
            f"| {name} | {r['agreement']:.2%} | {r['delta']:+.4f} [{r['delta_low']:+.4f}, "
            f"{r['delta_high']:+.4f}] | {r['batch_consistency']:.1%} | {r['texts_per_s']:.0f} | "
            f"{r['alone_texts_per_s']:.0f} |"
        )

    def report(name: str, path: Path) -> None:
        r = results[name] = measure(path, model_dir, texts, y_true, reference, metric, max_length)
        print(line(name, r), flush=True)

    if args.only:
        recipes = {
            name: make
            for name, make in recipes.items()
            if name == "fp32" or any(word in name for word in args.only)
        }
    timed: dict[str, Timed] = {}
    failed = []
    for name, make in recipes.items():
        try:
            path = make()
        except Exception as error:  # a recipe ONNX Runtime cannot apply to this graph
            failed.append(f"| {name} | failed: {str(error).splitlines()[0][:120]} | | | |")
            continue
        timed[name] = Timed(path, model_dir, texts, max_length)
        print(f"built {name}", flush=True)
    # the passes interleaved, recipe after recipe: a slow spell of this shared machine slows
    # every recipe a little rather than one recipe a lot
    for _ in range(PASSES):
        for recipe in timed.values():
            recipe.time_pass()
    print(header)
    for name, recipe in timed.items():
        results[name] = recipe.score(name, y_true, reference, metric)
        print(line(name, results[name]), flush=True)
    print(*failed, sep="\n")
    if args.keep_layers:
        # on the calibration method that agreed best
        method = "percentile" if (
            results["int8 static (QDQ, percentile)"]["agreement"]
            > results["int8 static (QDQ, min-max)"]["agreement"]
        ) else "minmax"  # fmt: skip
        order = most_sensitive_layers(
            fp32, model_dir, calibration, texts, y_true, reference, metric, max_length, scratch,
            method,
        )  # fmt: skip
        kept = order[: args.keep_layers]
        keep = layer_nodes(matmul_nodes(fp32), kept)
        name = f"int8 static (QDQ, {method}), layer {', '.join(map(str, kept))} in fp32"
        report(name, static_int8(fp32, scratch / "static.keep.onnx", calibration, keep, method))
    base = results["fp32"]
    for name, r in results.items():
        print(
            f"{name}: {r['texts_per_s'] / base['texts_per_s']:.2f}x fp32 texts/s in batches, "
            f"{r['alone_texts_per_s'] / base['alone_texts_per_s']:.2f}x alone"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
