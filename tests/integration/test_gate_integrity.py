"""The gate judges what it says it judges: champion and challenger on the same classes (matched
by name), against the champion Dagster recorded, never against an empty registry by mistake."""

from pathlib import Path

import pytest

from tests.conftest import (
    THROUGH_APPROVAL,
    copy_registered,
    graph_run_config,
    materialize_selected,
    tiny_rows,
)
from tests.integration.test_approval import approve
from tests.integration.test_data_assets import failure_message
from textops_core.registry import approved_models

GRAPH = THROUGH_APPROVAL


def write_source(folder: Path, mapping: list[str], label_of) -> Path:
    """A TweetEval folder of the session's kind of tweets (positive words vs negative words),
    with the label ids `label_of(row label)` under `mapping`."""
    folder.mkdir(parents=True)
    (folder / "mapping.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(mapping)))
    offset = 0
    for stem, size in (("train", 160), ("val", 40), ("test", 40)):
        rows = tiny_rows(size, offset)
        offset += size
        (folder / f"{stem}_text.txt").write_text("".join(f"{t}\n" for t, _ in rows))
        (folder / f"{stem}_labels.txt").write_text(
            "".join(f"{label_of(label, i)}\n" for i, (_, label) in enumerate(rows))
        )
    return folder


@pytest.fixture
def store_with_champion(approved_graph, tmp_path, model_store_at):
    """A model store holding a copy of the session's champion (classes positive, negative)."""
    home = tmp_path / "bentoml"
    (home / "models").mkdir(parents=True)
    copy_registered(approved_graph["tag"], home)
    model_store_at(home)
    return approved_graph["tag"]


def test_the_same_classes_in_another_order_are_compared_by_name(
    store_with_champion, store, instance, tmp_path
):
    # ids swapped: 0 is negative here, positive for the champion; the texts mean the same
    source = write_source(tmp_path / "swapped", ["negative", "positive"], lambda y, i: 1 - y)
    result = materialize_selected(
        store, GRAPH, run_config=graph_run_config(source), instance=instance
    )
    meta = result.asset_materializations_for_node("approved_model")[0].metadata
    # compared by id, the champion would score about 0 (every label flipped); by name it keeps
    # the score it earned on these tweets
    assert meta["champion_macro_f1"].value > 0.8
    assert f"vs champion {meta['champion_macro_f1'].value:.2f}" in meta["summary"].value


def test_a_changed_label_set_is_refused_unless_forced(
    store_with_champion, store, instance, tmp_path
):
    source = write_source(
        tmp_path / "three",
        ["positive", "negative", "neutral"],
        lambda y, i: 2 if i % 5 == 0 else y,
    )
    before = [str(m.tag) for m in approved_models()]
    refused = materialize_selected(
        store, GRAPH, run_config=graph_run_config(source), instance=instance, raise_on_error=False
    )
    assert not refused.success
    message = failure_message(refused)
    assert "the champion's classes ['positive', 'negative'] differ from the challenger's" in message
    assert "['positive', 'negative', 'neutral']" in message
    assert [str(m.tag) for m in approved_models()] == before
    forced = materialize_selected(
        store,
        ["approved_model"],
        run_config=graph_run_config(
            source,
            {"approved_model"},
            approved_model={"force": True, "force_reason": "neutral class added"},
        ),
        instance=instance,
    )
    decision = forced.output_for_node("approved_model")
    assert decision.approved and decision.served_labels["forced"] == "true"
    record = store.read_json(decision.path)
    assert record["reasons"][0].startswith(f"champion {store_with_champion} not compared")
    assert record["reasons"][-1] == "forced: neutral class added"
    assert str(approved_models()[0].tag) == decision.served_tag
    summary = forced.asset_materializations_for_node("approved_model")[0].metadata["summary"]
    assert summary.value.startswith("approved (forced): macro F1")
    assert "champion not comparable; failed same classes as champion" in summary.value


def test_a_champion_dagster_recorded_but_the_registry_lacks_fails_the_gate(
    approved_graph, tmp_path, model_store_at
):
    empty = model_store_at(tmp_path / "ephemeral-disk")
    result = approve(approved_graph)
    assert not result.success
    message = failure_message(result)
    assert "Dagster recorded textops-classifier:" in message
    assert f"the BentoML model store at {empty} (BENTOML_HOME) does not hold it" in message
    assert "nothing was approved" in message
    assert approved_models() == []


def older_copy(folder: Path) -> str:
    """A copy of the model at `folder` as an earlier approved version of it; returns its tag."""
    import shutil
    from datetime import datetime, timedelta

    import yaml

    target = folder.with_name(f"{folder.name}older")
    shutil.copytree(folder, target)
    info = yaml.safe_load((target / "model.yaml").read_text())
    info["version"] = target.name
    created = datetime.fromisoformat(str(info["creation_time"]))
    info["creation_time"] = (created - timedelta(days=1)).isoformat()
    (target / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    return f"{info['name']}:{target.name}"


def recorded_served(graph) -> str:
    import dagster as dg

    events = [
        graph["instance"].get_latest_materialization_event(dg.AssetKey(key))
        for key in ("approved_model", "served_model")
    ]
    event = max((e for e in events if e is not None), key=lambda e: e.timestamp)
    return event.asset_materialization.metadata["served_tag"].value


@pytest.mark.parametrize("damage", ["truncated weights", "no checksums"])
def test_a_damaged_champion_fails_the_gate_instead_of_lowering_the_bar(
    approved_graph, copied_model_store, damage
):
    """The recorded champion's files broken under it: the gate refuses rather than judging the
    challenger against an older model or as a first model (floor and baseline); a rollback
    then takes the damaged model out of service, and the older model is the champion."""
    import dagster as dg

    from assets.serving.served import served_model
    from orchestration.definitions import pipeline_resources
    from orchestration.resources.bento_registry import BentoModelStore

    champion = recorded_served(approved_graph)
    name, version = champion.split(":")
    folder = copied_model_store / "models" / name / version
    older = older_copy(folder)
    for other in approved_models():  # only the champion and its older copy stay approved
        if str(other.tag) not in {champion, older}:
            BentoModelStore().withdraw(str(other.tag), "not in this test", "test")
    assert [str(m.tag) for m in approved_models()] == [champion, older]
    if damage == "truncated weights":
        weights = max(folder.rglob("*.onnx"), key=lambda p: p.stat().st_size)
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (folder / "checksums.json").unlink()
    assert [str(m.tag) for m in approved_models()] == [older]  # every reader skips it ...

    result = approve(approved_graph)
    assert not result.success  # ... and the gate does not judge against what remains
    message = failure_message(result)
    assert f"Dagster recorded {champion} as the served model" in message
    assert "are damaged" in message and "nothing was approved" in message
    assert [str(m.tag) for m in approved_models()] == [older]

    # the rollback's served_model on a fresh instance (the session's records stay as they were
    # for the other tests; the bento step builds from the session's store)
    config = {"rollback_tag": champion, "rollback_reason": "damaged"}
    rolled = dg.materialize(
        [served_model],
        run_config={"ops": {"served_model": {"config": config}}},
        resources=pipeline_resources(approved_graph["store"]),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert rolled.output_for_node("served_model").tag == older
    withdrawn = BentoModelStore().get(champion).labels
    assert withdrawn["withdrawn"] == "true" and withdrawn["approved"] == "false"
