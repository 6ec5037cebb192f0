"""approved_model against a real champion in the BentoML store."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.resources import BentoModelStore
from tests.conftest import graph_run_config, materialize_selected
from textops_core.registry import approved_models


def approve(graph, assets=("approved_model",), **approval) -> dg.ExecuteInProcessResult:
    """approved_model (by default alone) on the graph's latest model, report, splits and
    serving variants."""
    return materialize_selected(
        graph["store"],
        list(assets),
        run_config=graph_run_config(graph["source"], set(assets), approved_model=approval),
        raise_on_error=False,
        instance=graph["instance"],
    )


def roll_back(graph, tag: str, reason: str = "a spike of complaints", by: str = "on-call"):
    from orchestration import definitions

    job = definitions.defs.resolve_job_def("rollback")
    return job.execute_in_process(
        run_config={"tag": tag, "reason": reason, "by": by},
        instance=graph["instance"],
        resources=definitions.pipeline_resources(graph["store"]),
        raise_on_error=False,
    )


def test_first_model_is_approved_with_lineage_labels(approved_graph):
    assert approved_graph["result"].success
    tag = approved_graph["tag"]
    model = next(m for m in approved_models() if str(m.tag) == tag)
    labels = model.info.labels
    splits = approved_graph["splits"]
    assert labels["approved"] == "true"
    assert labels["data_version"] == splits.version
    assert labels["raw_data_version"] == splits.raw_texts_version
    assert labels["dagster_run_id"] == approved_graph["result"].run_id
    assert labels["metric"].startswith("macro_f1=")
    assert model.info.metadata["label_names"] == ["positive", "negative"]
    assert (Path(model.path) / "model.safetensors").is_file()
    assert (Path(model.path) / "decision.json").is_file()
    meta = approved_graph["result"].asset_materializations_for_node("approved_model")[0].metadata
    assert meta["approved"].value is True
    assert "no champion yet" in meta["summary"].value


def test_bentoml_models_list_shows_the_labels(approved_graph):
    listing = subprocess.run(
        [
            str(Path(sys.executable).parent / "bentoml"),
            "models",
            "list",
            "textops-classifier",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert approved_graph["tag"] in listing.stdout


def test_rejected_challenger_leaves_the_champion_served(approved_graph):
    before = [str(m.tag) for m in approved_models()]
    result = approve(approved_graph, margin=1.0)  # nothing can beat the champion by 1.0
    assert result.success
    meta = result.asset_materializations_for_node("approved_model")[0].metadata
    assert meta["approved"].value is False
    assert meta["summary"].value.startswith("rejected: macro F1")
    assert "champion" in meta["decision"].value
    assert [str(m.tag) for m in approved_models()] == before
    assert meta["served_tag"].value == before[0]


def test_force_needs_a_reason_and_is_recorded(approved_graph):
    store = approved_graph["store"]
    refused = approve(approved_graph, margin=1.0, force=True)
    assert not refused.success
    forced = approve(approved_graph, margin=1.0, force=True, force_reason="rollback drill")
    meta = forced.asset_materializations_for_node("approved_model")[0].metadata
    assert meta["approved"].value is True and meta["forced"].value is True
    newest = approved_models()[0]
    assert newest.info.labels["forced"] == "true"
    assert str(newest.tag) == meta["served_tag"].value
    decision = store.read_json(forced.output_for_node("approved_model").path)
    assert decision["reasons"][-1] == "forced: rollback drill"


@pytest.mark.parametrize("floor", [0.99])
def test_floor_applies_without_a_champion(approved_graph, floor, monkeypatch):
    monkeypatch.setattr(BentoModelStore, "champion", lambda self: None)
    result = approve(approved_graph, absolute_floor=floor)
    meta = result.asset_materializations_for_node("approved_model")[0].metadata
    assert meta["approved"].value is (meta["challenger_macro_f1"].value >= floor)


def test_an_approved_model_carries_parity_checked_serving_variants(approved_graph):
    from textops_core.inference import serving_settings

    model = next(m for m in approved_models() if str(m.tag) == approved_graph["tag"])
    path = Path(model.path)
    assert (path / "onnx" / "model.onnx").is_file() and (
        path / "onnx" / "model.int8.onnx"
    ).is_file()
    serving = serving_settings(path)
    assert set(serving["variants"]) == {"pytorch", "onnx-fp32", "onnx-int8"}
    for name, score in serving["variants"].items():
        assert 0 <= score["agreement"] <= 1 and score["texts_per_s"] > 0, name
    assert serving["variants"][serving["variant"]]["passed"]
    assert serving["variants"]["onnx-fp32"]["agreement"] == 1.0  # exact export
    import onnx

    # eager attention: the padding mask is added once, not a masked Where in every layer
    fp32 = onnx.load(str(path / "onnx" / "model.onnx")).graph
    assert [n.op_type for n in fp32.node if "/layer." in n.name].count("Softmax") > 0
    assert not [n.name for n in fp32.node if n.op_type in {"Where", "IsNaN"} and
                "/layer." in n.name]  # fmt: skip
    # smoothed static int8: fixed ranges, so a text's answer does not depend on its batch; every
    # encoder projection reads a quantized input, through its smoothing scales
    assert serving["quantization"]["method"] == "smoothed"
    assert serving["quantization"]["fp32_matmuls"] == [] and serving["int8_attempts"] == []
    assert serving["variants"]["onnx-int8"]["batch_consistency"] == 1.0
    int8 = onnx.load(str(path / "onnx" / "model.int8.onnx")).graph
    made_by = {o: n for n in int8.node for o in n.output}
    projections = ("/query/", "/key/", "/value/", "/output/dense/", "/intermediate/dense/")
    layers = [n for n in int8.node if n.op_type == "MatMul" and "/layer." in n.name]
    weighted = [n for n in layers if any(p in n.name for p in projections)]
    encoder_layers = {n.name.split("/layer.")[1].split("/")[0] for n in layers}
    assert len(weighted) == 6 * len(encoder_layers)  # Q, K, V, attention out, FFN in and out
    for node in weighted:
        quantized = made_by[node.input[0]]
        assert quantized.op_type == "DequantizeLinear", node.name
        assert made_by[made_by[quantized.input[0]].input[0]].op_type == "Mul"  # smoothing
    assert not [n for n in int8.node if n.op_type == "QuantizeLinear" and
                made_by.get(n.input[0]) in layers]  # fmt: skip
    assert model.info.labels["serving_variant"] == serving["variant"]
    meta = approved_graph["result"].asset_materializations_for_node("approved_model")[0].metadata
    assert meta["serving_variant"].value == serving["variant"]
    assert "| variant |" in meta["serving_variants"].value


def test_a_variant_that_fails_parity_is_not_served_and_the_reason_is_recorded(
    approved_graph, monkeypatch
):
    import onnx

    from assets.serving import export

    def broken_quantization(model_dir, source, path, *args):
        """An "int8" model that answers the opposite class: it cannot pass parity."""
        graph = onnx.load(str(source))
        graph.graph.output[0].name = "logits_before"
        graph.graph.node[-1].output[0] = "logits_before"
        graph.graph.node.append(onnx.helper.make_node("Neg", ["logits_before"], ["logits"]))
        graph.graph.output[0].name = "logits"
        onnx.save(graph, str(path))

    monkeypatch.setattr(export, "quantize_int8", broken_quantization)
    # the same model again, exported again: it ties the champion, approved
    result = approve(approved_graph, ("serving_variants", "approved_model"))
    meta = result.asset_materializations_for_node("approved_model")[0].metadata
    assert meta["approved"].value is True
    decision = approved_graph["store"].read_json(result.output_for_node("approved_model").path)
    serving = decision["serving"]
    int8 = serving["variants"]["onnx-int8"]
    assert not int8["passed"] and int8["agreement"] < 0.5
    assert serving["variant"] in {"onnx-fp32", "pytorch"}
    assert "failed: onnx-int8: macro_f1" in serving["why"]
    assert meta["onnx-int8/agreement"].value < 0.5
    # how far under its floor it fell, in the table and as a number the UI can plot
    assert meta["onnx-int8/agreement_margin"].value < -0.4
    assert "| margin over the floors |" in meta["serving_variants"].value
    assert f"{int8['agreement_margin'] * 100:+.2f} pt" in meta["serving_variants"].value
    # the fallback (blockwise) was tried too, and failed the same way
    assert [a["method"] for a in serving["int8_attempts"]] == ["smoothed"]
    assert serving["quantization"]["method"] == "blockwise"


def test_an_int8_model_that_fails_parity_is_made_again_by_the_fallback(approved_graph, monkeypatch):
    import onnx

    from assets.serving import export

    real = export.quantize_int8

    def first_broken(model_dir, source, path, quantization, *args):
        if quantization.method != "smoothed":
            return real(model_dir, source, path, quantization, *args)
        graph = onnx.load(str(source))  # answers the opposite class
        graph.graph.node[-1].output[0] = "logits_before"
        graph.graph.node.append(onnx.helper.make_node("Neg", ["logits_before"], ["logits"]))
        onnx.save(graph, str(path))

    monkeypatch.setattr(export, "quantize_int8", first_broken)
    result = approve(approved_graph, ("serving_variants",))
    assert result.success
    serving = approved_graph["store"].read_json(
        f"{result.output_for_node('serving_variants').path}/serving.json"
    )
    (attempt,) = serving["int8_attempts"]
    assert attempt["method"] == "smoothed" and not attempt["passed"]
    assert attempt["agreement"] < 0.5
    assert serving["quantization"]["method"] == "blockwise"
    assert serving["variants"]["onnx-int8"]["passed"]
    meta = result.asset_materializations_for_node("serving_variants")[0].metadata
    assert "onnx-int8 first made smoothed: macro_f1" in meta["serving_variants"].value


def test_rollback_withdraws_the_served_model_and_serves_the_previous_one(approved_graph):
    from textops_core.registry import latest_approved

    newer = approve(approved_graph)  # the same model again: approved, the newest champion
    assert newer.output_for_node("approved_model").approved
    served, previous = [str(m.tag) for m in approved_models()[:2]]
    result = roll_back(approved_graph, served)
    assert result.success
    assert result.asset_materializations_for_node("bento")  # built for the previous model
    manifest = result.output_for_node("served_model")
    assert manifest.tag == previous
    assert str(latest_approved().tag) == previous
    import bentoml

    labels = bentoml.models.get(served).info.labels
    assert labels["approved"] == "false" and labels["withdrawn"] == "true"
    assert labels["withdrawn_reason"] == "a spike of complaints"
    assert labels["withdrawn_by"] == "on-call" and labels["withdrawn_at"].endswith("Z")
    meta = result.asset_materializations_for_node("served_model")[0].metadata
    assert meta["summary"].value.startswith(f"rolled back: withdrew {served}")
    assert meta["trigger"].value == "manual"
    record = approved_graph["store"].read_json(manifest.path)
    assert record["rollback"]["withdrawn"] == served
    bento_meta = result.asset_materializations_for_node("bento")[0].metadata
    assert bento_meta["model_tag"].value == previous
    # the same rollback again (a retry, a second click): nothing more is withdrawn
    again = roll_back(approved_graph, served, reason="clicked twice")
    assert again.success
    assert again.output_for_node("served_model").tag == previous
    assert str(latest_approved().tag) == previous
    summary = again.asset_materializations_for_node("served_model")[0].metadata["summary"]
    assert summary.value.startswith(f"already rolled back: {served} was withdrawn at")
    assert (
        approved_graph["instance"]
        .get_latest_materialization_event(dg.AssetKey("served_model"))
        .asset_materialization.metadata["served_tag"]
        .value
        == previous
    )


def test_a_rollback_needs_a_reason_the_served_tag_and_an_earlier_model(approved_graph):
    from tests.integration.test_data_assets import failure_message

    refused = roll_back(approved_graph, "x", reason=" ")
    assert not refused.success
    assert "a rollback needs a reason" in failure_message(refused)
    untagged = roll_back(approved_graph, " ", reason="why")
    assert "a rollback needs the tag of the served model" in failure_message(untagged)
    served = str(approved_models()[0].tag)
    other = str(approved_models()[-1].tag)
    if other != served:  # naming a model that is not served withdraws nothing
        wrong = roll_back(approved_graph, other, reason="why")
        assert f"{other} is not the served model ({served})" in failure_message(wrong)
        assert str(approved_models()[0].tag) == served


def test_the_rollback_job_needs_only_the_model_store(
    approved_graph, tmp_path, model_store_at, monkeypatch
):
    """A new Dagster instance and an empty artifact store (a new pod, a restored deployment):
    the rollback job reads the registry alone."""
    import shutil

    import bentoml

    from orchestration import definitions
    from orchestration.resources import LocalArtifactStore
    from tests.conftest import copy_registered
    from textops_core.registry import approve as approve_tag
    from textops_core.registry import publish_pending

    home = tmp_path / "bentoml"
    first = Path(copy_registered(approved_graph["tag"], home))
    model_store_at(home)
    monkeypatch.setenv("BENTOML_HOME", str(home))  # the bento build's subprocess
    info = bentoml.models.get(approved_graph["tag"]).info
    scratch = tmp_path / "newer"
    shutil.copytree(first, scratch, ignore=shutil.ignore_patterns("model.yaml", "checksums.json"))
    newer = publish_pending(scratch, dict(info.labels), dict(info.metadata))
    approve_tag(newer)
    fresh = dg.DagsterInstance.ephemeral()
    result = definitions.defs.resolve_job_def("rollback").execute_in_process(
        run_config={"tag": newer, "reason": "paged at night", "by": "on-call"},
        instance=fresh,
        resources=definitions.pipeline_resources(
            LocalArtifactStore(root=str(tmp_path / "empty-store"))
        ),
        raise_on_error=False,
    )
    assert result.success
    assert result.output_for_node("served_model").tag == approved_graph["tag"]
    bento_meta = result.asset_materializations_for_node("bento")[0].metadata
    assert bento_meta["model_tag"].value == approved_graph["tag"]
    assert bentoml.models.get(newer).info.labels["withdrawn_reason"] == "paged at night"


def test_a_distilled_int8_student_is_trained_quantized_and_checked_against_the_model(
    approved_graph,
):
    """quantization: distilled: the int8 variant comes from a student trained on the train split
    (2 passes over its 160 texts: 10 steps), and parity compares it with the model itself."""
    assets = ["serving_variants", "approved_model"]
    result = materialize_selected(
        approved_graph["store"],
        assets,
        run_config=graph_run_config(
            approved_graph["source"],
            set(assets),
            serving_variants={"quantization": "distilled", "quantization_fallback": None},
        ),
        raise_on_error=False,
        instance=approved_graph["instance"],
    )
    assert result.success
    decision = approved_graph["store"].read_json(result.output_for_node("approved_model").path)
    serving = decision["serving"]
    assert serving["quantization"]["method"] == "distilled" and not serving["int8_attempts"]
    trained = serving["quantization"]["distilled"]
    assert trained["steps"] == 10 and trained["texts"] == 160 and trained["seconds"] > 0
    assert 0 <= trained["last_loss"] < 10
    int8 = serving["variants"]["onnx-int8"]
    assert {"agreement", "agreement_margin", "bound_margin"} <= set(int8)
    assert int8["batch_consistency"] == 1.0  # static ranges: alone as in a batch
