"""Exact lineage under overlapping runs: every step uses the versions its own run made, a step
refuses inputs that do not belong together, and trainings take turns."""

import threading

import dagster as dg
import pytest

from assets.interfaces.manifests import TextSplitsManifest
from assets.model.training import fit
from tests.conftest import (
    THROUGH_APPROVAL,
    graph_run_config,
    latest_manifest,
    materialize_selected,
    write_tweeteval,
)
from tests.integration.test_data_assets import failure_message
from textops_core.registry import approved_models

GRAPH = THROUGH_APPROVAL


@pytest.fixture
def source(tmp_path):
    return write_tweeteval(tmp_path / "data", sizes=(120, 40, 40))


def other_splits(store, source, instance) -> dg.ExecuteInProcessResult:
    """What a second run does meanwhile: raw_texts and text_splits on a 12-row sample."""
    result = materialize_selected(
        store,
        ["raw_texts", "text_splits"],
        run_config=graph_run_config(
            source,
            {"raw_texts"},
            raw_texts={"max_rows_per_split": 12, "sample_seed": 1},
        ),
        instance=instance,
    )
    assert result.success
    return result


def test_a_run_scores_and_approves_its_model_on_its_own_splits_while_another_run_moves_them(
    store, instance, source, monkeypatch
):
    real_fine_tune = fit.fine_tune
    meanwhile = []

    def fine_tune_while_another_run_materializes_splits(*args, **kwargs):
        meanwhile.append(other_splits(store, source, instance))
        return real_fine_tune(*args, **kwargs)

    monkeypatch.setattr(fit, "fine_tune", fine_tune_while_another_run_materializes_splits)
    first = materialize_selected(
        store, GRAPH, run_config=graph_run_config(source), instance=instance
    )
    assert first.success, failure_message(first)
    own = first.output_for_node("text_splits")
    others = meanwhile[0].output_for_node("text_splits")
    # the race happened: while the first run trained, the latest text_splits became the other's
    assert others.version != own.version
    assert latest_manifest(instance, store, "text_splits", TextSplitsManifest) == others

    report_manifest = first.output_for_node("evaluation_report")
    report = store.read_json(f"{report_manifest.path}/report.json")
    assert report["test_rows"] == 40  # its own test split, not the other run's 12 rows
    assert report["lineage"]["text_splits"] == own.version
    assert report_manifest.text_splits_version == own.version
    decision = first.output_for_node("approved_model")
    assert decision.approved
    model = next(m for m in approved_models() if str(m.tag) == decision.served_tag)
    assert model.info.labels["data_version"] == own.version
    assert model.info.labels["raw_data_version"] == own.raw_texts_version
    assert model.info.labels["model_version"] == first.output_for_node("fine_tuned_model").version
    assert model.info.metadata["text_splits"]["version"] == own.version


def test_evaluation_refuses_a_model_trained_on_other_splits(store, instance, source):
    trained = materialize_selected(
        store,
        ["raw_texts", "text_splits", "fine_tuned_model"],
        run_config=graph_run_config(source, {"raw_texts", "fine_tuned_model"}),
        instance=instance,
    )
    assert trained.success
    model = trained.output_for_node("fine_tuned_model")
    others = other_splits(store, source, instance).output_for_node("text_splits")
    # evaluation_report alone: the latest model (trained on the first splits) and the latest
    # splits (the other run's) do not belong together
    result = materialize_selected(
        store,
        ["evaluation_report"],
        run_config=graph_run_config(source, {"evaluation_report"}),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    message = failure_message(result)
    assert (
        f"fine_tuned_model {model.version} was trained on text_splits "
        f"{model.text_splits.version}, but the text_splits given is {others.version}"
    ) in message
    assert "Materialize fine_tuned_model on these splits first" in message
    assert not result.get_asset_materialization_events()


def test_approval_refuses_a_report_on_another_model(store, instance, source):
    first = materialize_selected(
        store,
        ["raw_texts", "text_splits", "fine_tuned_model", "evaluation_report", "serving_variants"],
        run_config=graph_run_config(source, {"raw_texts", "fine_tuned_model", "evaluation_report"}),
        instance=instance,
    )
    assert first.success
    report = first.output_for_node("evaluation_report")
    retrained = materialize_selected(
        store,
        ["fine_tuned_model"],
        run_config=graph_run_config(source, {"fine_tuned_model"}, fine_tuned_model={"seed": 7}),
        instance=instance,
    )
    newer = retrained.output_for_node("fine_tuned_model")
    before = [str(m.tag) for m in approved_models()]
    result = materialize_selected(
        store,
        ["approved_model"],
        run_config=graph_run_config(source, {"approved_model"}),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert (
        f"evaluation_report {report.version} scored fine_tuned_model {report.model_version}, "
        f"not the fine_tuned_model given ({newer.version})"
    ) in failure_message(result)
    assert [str(m.tag) for m in approved_models()] == before  # nothing registered


def test_the_training_pool_lets_one_training_run_at_a_time(store, source, monkeypatch):
    from assets.model.train import TRAINING_POOL

    real_fine_tune = fit.fine_tune
    order: list[str] = []
    first_started, release_first = threading.Event(), threading.Event()

    def fine_tune_in_turn(*args, **kwargs):
        name = "first" if not order else "second"
        order.append(f"{name} starts")
        if name == "first":
            first_started.set()
            assert release_first.wait(300), "the test never released the first training"
        outcome = real_fine_tune(*args, **kwargs)
        order.append(f"{name} ends")
        return outcome

    monkeypatch.setattr(fit, "fine_tune", fine_tune_in_turn)
    settings = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(overrides=settings) as instance:
        assert other_splits(store, source, instance).success
        config = graph_run_config(source, {"fine_tuned_model"}, fine_tuned_model={"max_steps": 4})
        results = {}

        def train(name: str) -> None:
            results[name] = materialize_selected(
                store, ["fine_tuned_model"], run_config=config, instance=instance
            )

        first = threading.Thread(target=train, args=("first",))
        first.start()
        assert first_started.wait(300)
        second = threading.Thread(target=train, args=("second",))
        second.start()
        # the second run's training step waits for the pool's one slot, held by the first
        deadline = threading.Event()
        for _ in range(600):
            if instance.event_log_storage.get_concurrency_info(TRAINING_POOL).pending_step_count:
                break
            deadline.wait(0.5)
        info = instance.event_log_storage.get_concurrency_info(TRAINING_POOL)
        assert info.limit == 1
        assert info.pending_step_count == 1 and info.active_slot_count == 1
        assert order == ["first starts"]
        release_first.set()
        first.join(600)
        second.join(600)
    assert results["first"].success and results["second"].success
    assert order == ["first starts", "first ends", "second starts", "second ends"]
