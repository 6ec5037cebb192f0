"""Training on two processes started by torchrun through Dagster Pipes, in one Dagster run."""

import json
import os

import dagster as dg
import pytest

from assets.interfaces.manifests import ModelManifest
from assets.model.predict import load_classifier, predict
from tests.conftest import latest_manifest, write_tweeteval
from tests.integration.test_training import run_crashing_at_step_3, run_graph
from tests.unit.test_k8s_manifests import guide_yaml

pytestmark = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2 and os.environ.get("CI") != "true",
    reason="two training processes need two cores",
)
# docs/deploy.md's CPU block, as the guide shows it
TORCHRUN = guide_yaml("4.", "accelerator: cpu")["ops"]["fine_tuned_model"]["config"]


@pytest.fixture
def small_folder(tmp_path):
    return write_tweeteval(tmp_path / "small", sizes=(120, 40, 40))


def test_torchrun_trains_in_the_same_run_and_records_the_world(store, small_folder):
    instance = dg.DagsterInstance.ephemeral()
    result = run_graph(store, small_folder, train=TORCHRUN, instance=instance)
    assert result.success
    # the ranks started no Dagster run of their own
    assert instance.get_runs_count() == 1
    meta = result.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert meta["world_size"].value == 2 and meta["launcher"].text == "torchrun"
    assert meta["global_step"].value == 6
    assert "cpu x2 processes" in meta["device"].text

    manifest = result.output_for_node("fine_tuned_model")
    model_dir = store.local_dir(manifest.path)
    training = json.loads((model_dir / "training.json").read_text())
    assert (training["world_size"], training["num_nodes"], training["launcher"]) == (
        2,
        1,
        "torchrun",
    )
    assert training["best_step"] > 0 and training["history"]
    # rank 0's log lines reached the run through Pipes as it trained
    logs = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.step_key == "fine_tuned_model" and e.message
    ]
    assert any("rank 0 of 2" in line for line in logs)
    assert any("val/macro_f1" in line for line in logs)
    report = result.output_for_node("evaluation_report")
    texts = store.read_parquet(f"{report.path}/predictions.parquet")["text"].to_list()
    assert len(predict(load_classifier(model_dir, max_length=32), texts).labels) == 40


@pytest.mark.slow
def test_a_rank_that_fails_fails_the_step_and_leaves_no_model(store, small_folder, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    data = run_graph(store, small_folder, selection=["raw_texts", "text_splits"], instance=instance)
    assert data.success
    missing = {**TORCHRUN, "base_model": str(tmp_path / "no-such-model")}
    failed = run_graph(
        store, small_folder, train=missing, selection=["fine_tuned_model"], instance=instance
    )
    assert not failed.success
    assert not store.exists("fine_tuned_model")
    errors = [
        e.dagster_event.step_failure_data.error.to_string()
        for e in instance.all_logs(failed.run_id)
        if e.dagster_event and e.dagster_event.is_step_failure
    ]
    assert any("no-such-model" in error for error in errors)


@pytest.mark.slow
def test_a_crashed_one_process_training_resumes_on_two(store, small_folder, monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    data = run_graph(store, small_folder, selection=["raw_texts", "text_splits"], instance=instance)
    assert data.success
    crashed = run_crashing_at_step_3(store, small_folder, instance, monkeypatch)
    assert not crashed.success

    resumed = run_graph(
        store, small_folder, train=TORCHRUN, selection=["fine_tuned_model"], instance=instance
    )
    assert resumed.success
    meta = resumed.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert meta["resumed_from_step"].value == 2 and meta["world_size"].value == 2
    assert meta["global_step"].value == 6
    manifest = latest_manifest(instance, store, "fine_tuned_model", ModelManifest)
    assert manifest.version == resumed.output_for_node("fine_tuned_model").version


@pytest.fixture
def no_dropout_model(tmp_path):
    """The default base model with dropout off: without it, one process and two draw different
    dropout masks, and only the sharding and the gradient averaging are left to compare."""
    from assets.model.training.base_model import DEFAULT_BASE_MODEL, resolve_base_model

    source = resolve_base_model(DEFAULT_BASE_MODEL)
    folder = tmp_path / "no-dropout"
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path, no_dropout_model):
    """2 processes x 8 against 1 process x 16, same seed and data: the same steps, the same
    weights up to float summation order, the same evaluation."""
    from safetensors.torch import load_file

    from orchestration.resources import LocalArtifactStore

    folder = write_tweeteval(tmp_path / "data", sizes=(240, 40, 40))
    same = {
        "base_model": str(no_dropout_model),
        "class_weights": "none",
        "max_steps": 12,
        "checkpoint_every_n_steps": 100,
        "accelerator": "cpu",
    }
    runs = {}
    for name, train in {
        "one": {**same, "batch_size": 16},
        "two": {**same, **TORCHRUN, "batch_size": 8},
    }.items():
        store = LocalArtifactStore(root=str(tmp_path / name))
        instance = dg.DagsterInstance.ephemeral()
        result = run_graph(store, folder, train=train, instance=instance)
        assert result.success and instance.get_runs_count() == 1
        model_dir = store.local_dir(result.output_for_node("fine_tuned_model").path)
        runs[name] = {
            "meta": result.asset_materializations_for_node("fine_tuned_model")[0].metadata,
            "weights": load_file(model_dir / "model.safetensors"),
            "training": json.loads((model_dir / "training.json").read_text()),
            "report": store.read_json(
                f"{result.output_for_node('evaluation_report').path}/report.json"
            ),
        }
    one, two = runs["one"], runs["two"]
    assert one["meta"]["world_size"].value == 1 and two["meta"]["world_size"].value == 2
    assert one["meta"]["global_step"].value == two["meta"]["global_step"].value == 12
    losses = [
        [h["train/loss"] for h in run["training"]["history"] if "train/loss" in h]
        for run in (one, two)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-3)
    base = load_file(no_dropout_model / "model.safetensors")
    moved, apart = 0.0, 0.0
    for name, weight in one["weights"].items():
        apart = max(apart, float((weight - two["weights"][name]).abs().max()))
        reference = base.get(name.removeprefix("bert."), weight)
        moved = max(moved, float((weight - reference).abs().max()))
    # training moved the weights by `moved`; the two trainings differ by far less
    assert apart < 1e-4 < moved
    assert one["report"]["model"]["value"] == pytest.approx(
        two["report"]["model"]["value"], abs=0.03
    )
