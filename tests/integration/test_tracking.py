"""Weights & Biases, offline, as a user finds it after syncing: one group per Dagster run, the
splits and models as artifacts by reference, evaluation tables, the champion alias moving with
the gate and a rollback, and a sweep trial whose metrics land on its own run. Everything is read
back from the files W&B wrote."""

import os

import dagster as dg
import pytest

from tests.conftest import (
    THROUGH_APPROVAL,
    graph_run_config,
    materialize_selected,
    model_store,
    write_tweeteval,
)
from tests.wandb_files import LoggedArtifact, LoggedRun, offline_runs

WANDB_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}


def by_job(runs: list[LoggedRun], group: str) -> dict[str, LoggedRun]:
    return {run.job_type: run for run in runs if run.group == group}


def model_artifacts(runs: list[LoggedRun]) -> list[tuple[LoggedRun, LoggedArtifact]]:
    return [(run, a) for run in runs for a in run.artifacts if a.type == "model"]


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """A model A approved, a model B rejected, then forced in, then rolled back: four Dagster
    runs, with W&B offline, on a store and a model store of their own."""
    root = tmp_path_factory.mktemp("tracking")
    own = {"TEXTOPS_HOME": str(root / "home"), "BENTOML_HOME": str(root / "bentoml")}
    saved = {key: os.environ.get(key) for key in [*WANDB_ENV, *own]}
    # (BENTOML_HOME for the rollback's bento build, a subprocess)
    os.environ.update(WANDB_ENV | own)
    from orchestration import definitions
    from orchestration.resources import LocalArtifactStore

    store = LocalArtifactStore(root=str(root / "store"))
    instance = dg.DagsterInstance.ephemeral()
    source = write_tweeteval(root / "data", sizes=(80, 24, 24))
    try:
        with model_store(root / "bentoml"):
            first = materialize_selected(
                store, THROUGH_APPROVAL, graph_run_config(source), instance=instance
            )
            train_b = graph_run_config(source, fine_tuned_model={"seed": 7}, approved_model={
                "margin": 1.0
            })  # fmt: skip
            rejected = materialize_selected(store, THROUGH_APPROVAL, train_b, instance=instance)
            forced = materialize_selected(
                store,
                ["approved_model"],
                graph_run_config(
                    source,
                    {"approved_model"},
                    approved_model={"margin": 1.0, "force": True, "force_reason": "drill"},
                ),
                instance=instance,
            )
            b_tag = forced.output_for_node("approved_model").served_tag
            rollback = definitions.defs.resolve_job_def("rollback").execute_in_process(
                run_config={"tag": b_tag, "reason": "complaints", "by": "on-call"},
                instance=instance,
                resources=definitions.pipeline_resources(store),
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {
        "runs": offline_runs(root / "home" / "wandb"),
        "first": first,
        "rejected": rejected,
        "forced": forced,
        "rollback": rollback,
        "store": store,
    }


def test_one_dagster_run_is_one_w_and_b_group_with_its_versions(story):
    first = story["first"]
    runs = by_job(story["runs"], first.run_id)
    assert set(runs) == {"dataset", "train", "evaluation", "gate"}
    splits = first.output_for_node("text_splits")
    model = first.output_for_node("fine_tuned_model")
    for job, run in runs.items():
        assert run.config["dagster_run_id"] == first.run_id, job
        assert run.config["data_version"] == splits.version, job
        assert run.config["code_version"], job
    for job in ("train", "evaluation", "gate"):
        assert runs[job].config["model_version"] == model.version
    # the asset's metadata points at the run's offline folder (its URL when online)
    meta = first.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert os.path.isdir(meta["tracking_run"].value)
    assert meta["tracking_run"].value.endswith(runs["train"].id)


def test_splits_and_model_are_artifacts_by_reference_with_their_lineage(story):
    first, store = story["first"], story["store"]
    runs = by_job(story["runs"], first.run_id)
    splits = first.output_for_node("text_splits")
    model = first.output_for_node("fine_tuned_model")
    (dataset,) = runs["dataset"].artifacts
    assert (dataset.type, dataset.name) == ("dataset", "textops-splits")
    assert dataset.metadata["hashes"] == splits.hashes
    assert dataset.entries == {
        f"{name}.parquet": store.reference_uri(path) for name, path in splits.paths.items()
    }
    (trained,) = runs["train"].artifacts
    assert (trained.type, trained.name) == ("model", "textops-model")
    assert f"model-{model.version}" in trained.aliases
    assert trained.metadata["text_splits_version"] == splits.version
    # references into the store, no copies
    weights = trained.entries["model/model.safetensors"]
    assert weights == store.reference_uri(f"{model.path}/model.safetensors")
    # what each run used (offline W&B refuses the used-by edge; the run records it)
    assert runs["train"].config["inputs"] == [f"textops-splits:splits-{splits.version}"]
    assert runs["evaluation"].config["inputs"] == [f"textops-model:model-{model.version}"]


def test_the_training_run_has_the_training_curves(story):
    train = by_job(story["runs"], story["first"].run_id)["train"]
    logged = {key for row in train.history for key in row}
    assert {"train/loss", "val/macro_f1", "val/loss"} <= logged
    assert train.config["learning_rate"] == 1e-4  # the run's config is the training config


def test_the_evaluation_as_w_and_b_users_read_it(story):
    first = story["first"]
    evaluation = by_job(story["runs"], first.run_id)["evaluation"]
    report = first.asset_materializations_for_node("evaluation_report")[0].metadata
    assert evaluation.summary["test/macro_f1"] == pytest.approx(report["macro_f1"].value, abs=1e-4)
    for key in ("calibration/ece_before", "calibration/ece_after", "calibration/temperature"):
        assert key in evaluation.summary
    logged = {key.split("/")[0] for row in evaluation.history for key in row}
    assert {"confusion_matrix_table", "per_class", "predictions", "calibration"} <= logged
    assert {"confusion_matrix_plot", "reliability_diagram"} <= logged
    tables = {a.name.rsplit("-", 1)[-1] for a in evaluation.artifacts if a.type == "run_table"}
    assert {"per_class", "predictions", "calibration"} <= tables


def test_the_gate_moves_the_champion_alias_and_notes_a_rejection(story):
    runs = story["runs"]
    first, rejected, forced = story["first"], story["rejected"], story["forced"]
    model_a = first.output_for_node("fine_tuned_model").version
    model_b = rejected.output_for_node("fine_tuned_model").version

    gate_a = by_job(runs, first.run_id)["gate"]
    assert gate_a.summary["approved"] is True
    (champion_a,) = gate_a.artifacts
    assert {"champion", f"model-{model_a}"} <= set(champion_a.aliases)

    gate_b = by_job(runs, rejected.run_id)["gate"]
    assert gate_b.summary["approved"] is False
    assert gate_b.summary["decision"].startswith("rejected: macro F1")
    assert gate_b.summary["reasons"]
    (noted,) = gate_b.artifacts
    assert "champion" not in noted.aliases and f"model-{model_b}" in noted.aliases
    assert noted.description.startswith("rejected: macro F1")

    gate_forced = by_job(runs, forced.run_id)["gate"]
    (champion_b,) = gate_forced.artifacts
    assert {"champion", f"model-{model_b}"} <= set(champion_b.aliases)
    assert champion_b.description.startswith("approved (forced)")


def test_a_rollback_gives_the_champion_alias_back(story):
    runs, first, rejected = story["runs"], story["first"], story["rejected"]
    model_a = first.output_for_node("fine_tuned_model").version
    model_b = rejected.output_for_node("fine_tuned_model").version
    gate = by_job(runs, story["rollback"].run_id)["gate"]
    assert gate.summary["decision"].startswith("rolled back: withdrew")
    aliases = {tuple(sorted(a.aliases)): a for a in gate.artifacts}
    restored = next(a for a in gate.artifacts if "champion" in a.aliases)
    assert f"model-{model_a}" in restored.aliases
    withdrawn = next(a for a in gate.artifacts if f"model-{model_b}" in a.aliases)
    assert "champion" not in withdrawn.aliases and "complaints" in withdrawn.description
    assert len(aliases) == 2


def test_tracking_that_fails_never_fails_the_step(tmp_path, monkeypatch, caplog):
    from orchestration import definitions
    from orchestration.resources import LocalArtifactStore, WandbTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "not-a-folder").write_text("W&B cannot write here")
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    resources = definitions.pipeline_resources(store) | {
        "tracker": WandbTracker(dir=str(tmp_path / "not-a-folder" / "wandb"))
    }
    result = dg.materialize(
        [*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=["raw_texts", "text_splits", "fine_tuned_model"],
        resources=resources,
        run_config=graph_run_config(
            write_tweeteval(tmp_path / "data"), {"raw_texts", "fine_tuned_model"}
        ),
    )
    assert result.success
    assert "W&B tracking failed" in caplog.text
    meta = result.asset_materializations_for_node("fine_tuned_model")[0].metadata
    assert "tracking_run" not in meta


@pytest.mark.slow  # a Dagster run in a subprocess; .ci/run runs the slow tests
def test_a_sweep_trial_logs_its_training_on_the_run_the_agent_watches(tmp_path):
    import subprocess
    import sys

    from tests.processes import BIN, ROOT, write_dagster_yaml

    home = tmp_path / "dagster_home"
    home.mkdir()
    write_dagster_yaml(home)
    env = {
        **os.environ,
        **WANDB_ENV,
        "DAGSTER_HOME": str(home),
        "TEXTOPS_HOME": str(tmp_path / "textops"),
        "TEXTOPS_SOURCE": str(write_tweeteval(tmp_path / "data")),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }

    def run(*command: str) -> str:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run(str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions",
        "--select", "raw_texts,text_splits")  # fmt: skip
    parameters = {"learning_rate": 1e-4, "batch_size": 16}
    trial = f"from orchestration.sweep import run_trial; print(run_trial({parameters!r}))"
    dagster_run = run(sys.executable, "-c", trial).strip().splitlines()[-1]

    runs = offline_runs(tmp_path / "textops" / "wandb")
    (watched,) = [r for r in runs if r.job_type == "sweep-trial"]
    assert not [r for r in runs if r.job_type == "train"]  # no run of its own
    assert (watched.config["learning_rate"], watched.config["batch_size"]) == (1e-4, 16)
    assert watched.config["dagster_run_id"] == watched.summary["dagster_run_id"] == dagster_run
    assert watched.summary["dagster_success"] is True
    assert "val/macro_f1" in watched.summary  # the sweep's metric, on the agent's run
    assert any("val/macro_f1" in row for row in watched.history)
    (evaluation,) = [r for r in runs if r.job_type == "evaluation"]
    assert evaluation.group == dagster_run and "test/macro_f1" in evaluation.summary
