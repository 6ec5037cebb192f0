"""The graph through evaluation_report on ~200 rows, a few steps; resume after a crash."""

import json

import dagster as dg
import numpy as np
import pytest

from assets.data.raw import raw_texts
from assets.data.splits import text_splits
from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.manifests import ModelManifest
from assets.model.evaluate import evaluation_report
from assets.model.predict import load_classifier, predict
from assets.model.train import fine_tuned_model
from assets.model.training import fit
from data_checks.asset_checks import raw_texts_checks, text_splits_checks
from orchestration.definitions import pipeline_resources
from tests.conftest import latest_manifest, write_tweeteval

GRAPH = [
    raw_texts,
    text_splits,
    fine_tuned_model,
    evaluation_report,
    raw_texts_checks,
    text_splits_checks,
]
TRAIN = {"max_steps": 6, "batch_size": 16, "max_length": 32, "checkpoint_every_n_steps": 2}


def run_graph(
    store, source, train=None, selection=None, instance=None
) -> dg.ExecuteInProcessResult:
    ops = {
        "raw_texts": {"config": {"source": str(source)}},
        "fine_tuned_model": {"config": {**TRAIN, **(train or {})}},
        "evaluation_report": {"config": {"latency_samples": 4}},
    }
    if selection:
        ops = {name: op for name, op in ops.items() if name in selection}
    return dg.materialize(
        GRAPH,
        selection=selection,
        resources=pipeline_resources(store),
        run_config={"ops": ops},
        raise_on_error=False,
        instance=instance,
    )


def run_crashing_at_step_3(store, source, instance, monkeypatch) -> dg.ExecuteInProcessResult:
    """fine_tuned_model in one process, crashing after step 3 (its checkpoint of step 2 kept)."""
    original = fit.ProgressLog.on_train_batch_end

    def crash_at_step_3(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 3:
            raise RuntimeError("simulated crash at step 3")

    with monkeypatch.context() as patch:
        patch.setattr(fit.ProgressLog, "on_train_batch_end", crash_at_step_3)
        return run_graph(store, source, selection=["fine_tuned_model"], instance=instance)


@pytest.fixture
def small_folder(tmp_path):
    return write_tweeteval(tmp_path / "small", sizes=(120, 40, 40))


def test_graph_trains_a_reloadable_model_and_reports_on_it(store, small_folder):
    result = run_graph(store, small_folder)
    assert result.success
    train_meta = result.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert train_meta["global_step"].value == 6
    assert train_meta["train_samples_per_s"].value > 0
    assert "data:image/png;base64," in train_meta["curves"].value

    manifest = result.output_for_node("fine_tuned_model")
    model_dir = store.local_dir(manifest.path)
    assert {"model.safetensors", "config.json", "tokenizer.json", "training.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    training = json.loads((model_dir / "training.json").read_text())
    splits = result.output_for_node("text_splits")
    assert training["data_version"]["train"] == splits.hashes["train"]
    assert manifest.text_splits == splits and training["code_version"] == manifest.code_version
    assert training["config"]["max_steps"] == 6 and training["best_step"] > 0
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "positive", "1": "negative"}

    report_dir = result.output_for_node("evaluation_report").path
    predictions = store.read_parquet(f"{report_dir}/predictions.parquet")
    again = predict(load_classifier(model_dir, max_length=32), predictions["text"].to_list())
    assert again.labels.tolist() == predictions["predicted"].to_list()
    np.testing.assert_allclose(
        again.probabilities, np.stack(predictions["probabilities"]), atol=1e-5
    )

    report = store.read_json(f"{report_dir}/report.json")
    eval_meta = result.asset_materializations_for_node("evaluation_report")[0].metadata
    assert eval_meta["macro_f1"].value == report["model"]["value"]
    low, high = report["model"]["ci95"]
    assert low <= report["model"]["value"] <= high
    assert report["test_rows"] == 40 and set(report["baseline"]) >= {"value", "ci95"}
    assert "| positive |" in eval_meta["report"].value
    assert store.exists(f"{report_dir}/confusion_matrix.png")


def test_crash_leaves_no_model_and_the_rerun_resumes(store, instance, small_folder, monkeypatch):
    data = run_graph(store, small_folder, selection=["raw_texts", "text_splits"], instance=instance)
    assert data.success
    crashed = run_crashing_at_step_3(store, small_folder, instance, monkeypatch)
    assert not crashed.success
    with pytest.raises(MissingArtifactError):  # nothing half-written is visible
        latest_manifest(instance, store, "fine_tuned_model", ModelManifest)
    assert not store.exists("fine_tuned_model")

    resumed = run_graph(store, small_folder, selection=["fine_tuned_model"], instance=instance)
    assert resumed.success
    meta = resumed.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert meta["resumed_from_step"].value == 2  # the last checkpoint before the crash
    assert meta["global_step"].value == 6

    other_config = run_graph(
        store,
        small_folder,
        train={"learning_rate": 1e-4},
        selection=["fine_tuned_model"],
        instance=instance,
    )
    meta = other_config.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert meta["resumed_from_step"].value == 0  # another config never resumes this one
