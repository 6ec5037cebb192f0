"""Int8 versions of an exported classifier with ONNX Runtime's quantization tools.

`blockwise_int8` stores the weights as int8 in blocks of input channels (ONNX Runtime's
MatMulNBits) and quantizes each token's activations at run time, block by block, from that
token's own values: a text's answer cannot depend on its neighbours, and an outlier channel only
coarsens the block it sits in, not the whole tensor. `static_int8` calibrates the activations'
ranges once, on training texts, and writes QDQ (QuantizeLinear/DequantizeLinear) pairs around
the MatMuls: every text is then scaled the same way whatever else is in its batch. `smoothed`
first moves part of each activation channel's range into the weights (SmoothQuant), so that
per-tensor ranges fit the activations' outlier channels. `dynamic_int8` quantizes activations
per call, from the batch's own range, so a text's neighbours can move a close call.
`optimized` applies ONNX Runtime's transformer graph fusions (attention, layer norm, GELU)
first. benchmarks/quantization.py measures each recipe side by side."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np


class Calibration:
    """Texts tokenized as the service tokenizes them, in batches of one shape (ONNX Runtime's
    histogram calibrators, percentile and entropy, stack every batch's activations, so their
    shapes must agree): every batch is padded to the longest text, and the last one is filled
    up with the first texts again. Read as ONNX Runtime's calibrator reads it (`get_next`,
    `rewind`)."""

    def __init__(self, model_dir: Path, texts: list[str], max_length: int, batch: int = 32):
        from textops_core.inference import TextEncoder, pad_ids

        if not texts:
            raise ValueError("static quantization needs calibration texts; none were given")
        encoder = TextEncoder(model_dir, max_length)
        ids = encoder.encode(texts)
        width = max(len(x) for x in ids)
        batch = min(batch, len(ids))
        ids += ids[: -len(ids) % batch]  # the last batch filled up: every batch `batch` rows
        self.batches: list[dict[str, np.ndarray]] = []
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            input_ids, mask = pad_ids(chunk, encoder.pad_id)
            extra = width - input_ids.shape[1]
            if extra:
                input_ids = np.pad(input_ids, ((0, 0), (0, extra)), constant_values=encoder.pad_id)
                mask = np.pad(mask, ((0, 0), (0, extra)))
            self.batches.append({"input_ids": input_ids, "attention_mask": mask})
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def optimized(source: Path, target: Path, model_dir: Path) -> Path:
    """`source` with ONNX Runtime's BERT fusions (the encoder's heads and width from its
    config.json), saved to `target`."""
    from onnxruntime.transformers import optimizer

    config = json.loads((Path(model_dir) / "config.json").read_text())
    model = optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
    )
    model.save_model_to_file(str(target))
    return target


FFN_OUTPUT = r"/layer\.\d+/output/dense/"  # not /attention/output/dense/

# A fused graph (`optimized`) has nodes of ONNX Runtime's own domain, whose outputs shape
# inference cannot type; they are float tensors.
FLOAT_DEFAULT = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT


def dynamic_int8(source: Path, target: Path) -> Path:
    """int8 weights (per channel, unsigned), activations quantized per call from their range."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QUInt8,
        per_channel=True,
        extra_options=FLOAT_DEFAULT,
    )
    return target


# MatMulNBits' blocks: a power of two of at least 16 input channels. ONNX Runtime answers a lone
# text differently from the same text in a batch with 128-wide blocks (one kernel for a single
# sequence, another for several), identically with 16, 32 and 64 (benchmarks/quantization.py).
BLOCK_SIZES = (16, 32, 64)


def check_block_size(block_size: int) -> None:
    if block_size not in BLOCK_SIZES:
        raise ValueError(
            f"block_size must be one of {', '.join(map(str, BLOCK_SIZES))}, got {block_size}"
        )


def blockwise_int8(
    source: Path, target: Path, block_size: int = 64, keep_fp32: list[str] | None = None
) -> Path:
    """int8 weights, symmetric, one scale per block of `block_size` input channels of each
    output channel, as MatMulNBits nodes at accuracy level 4: at run time every row (one token)
    of the activations is quantized per block of the same width, and the products summed in
    int32. Every MatMul with a weight is quantized (attention's activation-by-activation
    products stay in fp32), except those named in `keep_fp32`."""
    import onnx

    check_block_size(block_size)
    quantizer = _nbits_quantizer()(
        onnx.load(str(source)),
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 activations, int32 sums (0-3: weights dequantized to fp32)
        nodes_to_exclude=keep_fp32 or [],
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    return target


def _nbits_quantizer():
    """ONNX Runtime's MatMulNBitsQuantizer, imported without the root-logger set-up its module
    runs on import (logging.basicConfig at INFO, a line for every node of every model)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    from onnxruntime.quantization import matmul_nbits_quantizer

    root.handlers[:], root.level = handlers, level
    logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)
    return matmul_nbits_quantizer.MatMulNBitsQuantizer


def matmul_nodes(path: Path) -> list[str]:
    """Names of the graph's MatMul and Gemm nodes, the ones quantization replaces."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in {"MatMul", "Gemm"}]


def matching_nodes(nodes: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The nodes whose name matches any of the regular expressions `patterns`."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return [n for n in nodes if any(pattern.search(n) for pattern in compiled)]


# onnxruntime.quantization.CalibrationMethod's members, by the names this module takes
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def static_int8(
    source: Path,
    target: Path,
    calibration: Calibration,
    keep_fp32: list[str] | None = None,
    method: str = "minmax",
) -> Path:
    """QDQ int8: weights per channel (signed, symmetric), activations (unsigned) at ranges
    calibrated once on `calibration` (`minmax`: the observed range; `percentile`: 99.999 % of
    it, clipping outliers; `entropy`: the range that keeps the histogram's information). The
    inputs of the MatMuls with a weight are quantized, except those named in `keep_fp32`; their
    outputs stay fp32 (ONNX Runtime would otherwise quantize them too, the logits included,
    which moves more test labels and runs slower: benchmarks/quantization.py)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
    prepared = target.with_name(target.stem + ".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    calibration.rewind()
    try:
        quantize_static(
            str(prepared),
            str(target),
            calibration,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=keep_fp32 or [],
            extra_options={
                **FLOAT_DEFAULT,
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "MatMulConstBOnly": True,
                "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
            },
        )
    finally:
        prepared.unlink(missing_ok=True)
    return target


# the bounds of a channel's smoothing factor: a channel that is silent in calibration or a weight
# row of zeros must not turn into a huge or vanishing scale
SMOOTHING_BOUNDS = (1e-2, 1e3)


def check_alpha(alpha: float) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"smoothing alpha must lie in [0, 1], got {alpha}")


def smoothed(
    source: Path,
    target: Path,
    calibration: Calibration,
    alpha: float,
    keep_fp32: list[str] | None = None,
) -> Path:
    """`source` with the range of each MatMul input's channels shared with the weights
    (SmoothQuant, Xiao et al. 2023): channel j of the input is divided by
    s_j = max|x_j|^alpha / max|W_j|^(1 - alpha) (one Mul node per input tensor) and row j of
    every weight that reads it multiplied by s_j, so the products are unchanged while the few
    channels that dominate a layer norm's output no longer set the per-tensor range that every
    other channel is quantized on. max|x_j| is taken over `calibration` as the calibrator sees
    it; the MatMuls named in `keep_fp32` are left as they are. Saved to `target`, still fp32."""
    import onnx
    from onnx import helper, numpy_helper

    check_alpha(alpha)
    model = onnx.load(str(source))
    graph = model.graph
    weights = {w.name: w for w in graph.initializer if len(w.dims) == 2}
    kept = set(keep_fp32 or [])
    readers: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and node.name not in kept:
            readers.setdefault(node.input[0], []).append(node)
    if not readers:
        onnx.save(model, str(target))
        return target
    peak = _channel_peaks(model, list(readers), calibration)
    added = {}
    for tensor, nodes in readers.items():
        rows = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in rows], axis=0)
        scale = np.clip(
            np.maximum(peak[tensor], 1e-5) ** alpha / np.maximum(weight_peak, 1e-5) ** (1 - alpha),
            *SMOOTHING_BOUNDS,
        ).astype(np.float32)
        name = f"{tensor}_smoothed"
        graph.initializer.append(numpy_helper.from_array(1 / scale, f"{name}_inverse_scale"))
        added[tensor] = helper.make_node(
            "Mul", [tensor, f"{name}_inverse_scale"], [name], name=f"{name}/Mul"
        )
        for node, w in zip(nodes, rows, strict=True):
            weights[node.input[1]].CopyFrom(
                numpy_helper.from_array((w * scale[:, None]).astype(np.float32), node.input[1])
            )
            node.input[0] = name
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(added.pop(i.name) for i in graph.input if i.name in added)
    for node in nodes:  # each Mul right after the node that makes its input: still sorted
        graph.node.append(node)
        graph.node.extend(added.pop(o) for o in node.output if o in added)
    onnx.save(model, str(target))
    return target


def smoothed_int8(
    source: Path,
    target: Path,
    calibration: Calibration,
    alpha: float,
    keep_fp32: list[str] | None = None,
) -> Path:
    """`smoothed`, then `static_int8` at percentile ranges: every MatMul with a weight on int8
    inputs, except those named in `keep_fp32`. Written here because ONNX Runtime's own
    SmoothQuant option runs through Intel Neural Compressor, a dependency textops does not take."""
    smooth = target.with_name(target.stem + ".smoothed.onnx")
    try:
        smoothed(source, smooth, calibration, alpha, keep_fp32)
        return static_int8(smooth, target, calibration, keep_fp32, "percentile")
    finally:
        smooth.unlink(missing_ok=True)


def _channel_peaks(model, tensors: list[str], calibration: Calibration) -> dict[str, np.ndarray]:
    """max |x| per channel (last axis) of each of `tensors` over the calibration batches."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors
        if t not in known
    )  # fmt: skip
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    peak = {t: np.zeros(0, np.float32) for t in tensors}
    calibration.rewind()
    while (batch := calibration.get_next()) is not None:
        for tensor, value in zip(tensors, session.run(tensors, batch), strict=True):
            channels = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            peak[tensor] = channels if not peak[tensor].size else np.maximum(peak[tensor], channels)
    calibration.rewind()
    return peak
