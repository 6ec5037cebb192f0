"""The rollout's rules (textops_core/rollout.py's `plan`), without processes: a new champion is
loaded by every worker, shadowed, then promoted or rejected; a rollback is served once verified;
a model that fails to load is never served; a new model that regresses live is flagged once."""

from pathlib import Path

import pytest

from textops_core.rollout import Champion, RolloutSettings, Stats, empty_state, label_shift, plan
from textops_core.settings import ServiceSettings, service_settings

SETTINGS = RolloutSettings.of(ServiceSettings(follow=True, shadow_requests=100), Path("/unused"))
MIX = {"positive": 0.5, "negative": 0.5}


def worker(pid: int, ready=(), failed=None, shadow=None, live=None) -> dict:
    return {
        "pid": pid,
        "ready": list(ready),
        "failed": failed or {},
        "shadow": shadow or {},
        "live": live or {},
    }


def stats(requests: int, labels: dict[str, int], ms: float = 5.0, live_ms: float = 5.0, errors=0):
    s = Stats()
    for _ in range(requests - errors):
        names = [n for n, k in labels.items() for _ in range(k)][:1] or ["positive"]
        s.record(ms, names, names, live_ms)
    s.labels = dict(labels)
    for _ in range(errors):
        s.failed()
    from dataclasses import asdict

    return asdict(s)


def new_champion(tag="m:2") -> Champion:
    return Champion(tag, live_approved=True, newer_than_live=True, expected_mix=MIX)


def test_a_new_champion_waits_for_every_worker_then_shadows_then_goes_live():
    state = empty_state("m:1", 0.0, "start")
    loading = plan(state, new_champion(), [worker(1), worker(2)], 10.0, SETTINGS)
    assert loading.state["candidate"]["phase"] == "loading"
    assert loading.state["live"]["tag"] == "m:1"
    one_ready = plan(loading.state, new_champion(), [worker(1, ["m:2"]), worker(2)], 11.0, SETTINGS)
    assert one_ready.state["candidate"]["phase"] == "loading"  # the other worker is not ready
    both = [worker(1, ["m:1", "m:2"]), worker(2, ["m:1", "m:2"])]
    shadowing = plan(one_ready.state, new_champion(), both, 12.0, SETTINGS)
    assert shadowing.state["candidate"]["phase"] == "shadow"
    # fewer shadowed requests than the window, and the window's minutes not over: still shadow
    partial = [worker(1, ["m:2"], shadow={"m:2": stats(40, {"positive": 20, "negative": 20})})]
    waiting = plan(shadowing.state, new_champion(), partial, 60.0, SETTINGS)
    assert waiting.state["candidate"]["phase"] == "shadow" and not waiting.events
    full = [
        worker(1, ["m:2"], shadow={"m:2": stats(60, {"positive": 30, "negative": 30})}),
        worker(2, ["m:2"], shadow={"m:2": stats(50, {"positive": 20, "negative": 30})}),
    ]
    promoted = plan(waiting.state, new_champion(), full, 70.0, SETTINGS)
    assert promoted.state["live"]["tag"] == "m:2" and promoted.state["live"]["previous"] == "m:1"
    assert promoted.state["candidate"] is None and not promoted.withdraw
    (event,) = promoted.events
    assert event["event"] == "live" and event["shadow"]["requests"] == 110
    assert event["approval_to_live_s"] == 60.0


def test_a_shadow_that_collapses_onto_one_class_is_withdrawn_with_the_reason():
    state = empty_state("m:1", 0.0, "start")
    state["candidate"] = {"tag": "m:2", "kind": "new", "phase": "shadow", "since": 0.0,
                          "shadow_since": 0.0, "expected_mix": MIX}  # fmt: skip
    collapsed = [worker(1, ["m:2"], shadow={"m:2": stats(120, {"negative": 120})})]
    decided = plan(state, new_champion(), collapsed, 30.0, SETTINGS)
    assert decided.state["live"]["tag"] == "m:1"
    ((tag, reason),) = decided.withdraw
    assert tag == "m:2" and "label mix {negative: 100%}" in reason
    assert "from its evaluation's {negative: 50%, positive: 50%}" in reason
    assert decided.state["rejected"]["m:2"] == reason and reason.startswith("shadow: ")
    # not tried again while the registry still names it (before the withdrawal is read back)
    again = plan(decided.state, new_champion(), collapsed, 31.0, SETTINGS)
    assert again.state["candidate"] is None and not again.events


def test_a_slow_or_failing_shadow_is_rejected():
    state = empty_state("m:1", 0.0, "start")
    state["candidate"] = {"tag": "m:2", "kind": "new", "phase": "shadow", "since": 0.0,
                          "shadow_since": 0.0, "expected_mix": MIX}  # fmt: skip
    slow = [worker(1, shadow={"m:2": stats(100, MIX_COUNTS, ms=40.0, live_ms=10.0)})]
    (_, reason), = plan(state, new_champion(), slow, 1.0, SETTINGS).withdraw  # fmt: skip
    assert "p95 latency 40.0 ms against the live model's 10.0 ms (at most 2x)" in reason
    failing = [worker(1, shadow={"m:2": stats(100, MIX_COUNTS, errors=5)})]
    (_, reason), = plan(state, new_champion(), failing, 1.0, SETTINGS).withdraw  # fmt: skip
    assert "errors on 5.0% of shadowed requests (at most 1.0%)" in reason


MIX_COUNTS = {"positive": 50, "negative": 50}


def test_a_shadow_window_that_runs_out_of_time_judges_what_it_saw():
    state = empty_state("m:1", 0.0, "start")
    state["candidate"] = {"tag": "m:2", "kind": "new", "phase": "shadow", "since": 0.0,
                          "shadow_since": 0.0, "expected_mix": MIX}  # fmt: skip
    quiet = [worker(1, shadow={"m:2": stats(3, {"positive": 2, "negative": 1})})]
    assert plan(state, new_champion(), quiet, 599.0, SETTINGS).state["candidate"] is not None
    decided = plan(state, new_champion(), quiet, 600.0, SETTINGS)
    assert decided.state["live"]["tag"] == "m:2"


def test_a_model_that_fails_to_load_in_any_worker_is_never_served_and_not_withdrawn():
    state = empty_state("m:1", 0.0, "start")
    loading = plan(state, new_champion(), [worker(1)], 1.0, SETTINGS).state
    workers = [worker(1, ["m:2"]), worker(2, failed={"m:2": "m:2: its files do not match"})]
    decided = plan(loading, new_champion(), workers, 2.0, SETTINGS)
    assert decided.state["live"]["tag"] == "m:1" and decided.state["candidate"] is None
    assert decided.state["rejected"]["m:2"] == "not served: m:2: its files do not match"
    assert not decided.withdraw  # a bad copy here says nothing of the model itself


def test_a_rollback_goes_live_as_soon_as_every_worker_verified_it_with_no_shadow():
    state = empty_state("m:2", 0.0, "start")
    back = Champion("m:1", live_approved=False, newer_than_live=False, expected_mix=MIX)
    loading = plan(state, back, [worker(1)], 1.0, SETTINGS)
    assert loading.state["candidate"]["kind"] == "rollback"
    decided = plan(loading.state, back, [worker(1, ["m:1"]), worker(2, ["m:1"])], 2.0, SETTINGS)
    assert decided.state["live"]["tag"] == "m:1"
    assert decided.state["live"]["reason"] == "rollback: served again once verified"


def test_shadow_off_promotes_once_verified():
    off = RolloutSettings.of(ServiceSettings(follow=True, shadow_requests=0), Path("/unused"))
    state = plan(empty_state("m:1", 0.0, "s"), new_champion(), [worker(1)], 1.0, off).state
    decided = plan(state, new_champion(), [worker(1, ["m:2"])], 2.0, off)
    assert decided.state["live"]["tag"] == "m:2"


def test_a_candidate_replaced_in_the_registry_is_abandoned():
    state = plan(empty_state("m:1", 0.0, "s"), new_champion("m:2"), [worker(1)], 1.0, SETTINGS)
    decided = plan(state.state, new_champion("m:3"), [worker(1, ["m:2"])], 2.0, SETTINGS)
    assert decided.state["candidate"]["tag"] == "m:3"
    assert [e["event"] for e in decided.events] == ["abandoned", "loading"]


def test_a_new_model_regressing_live_in_its_first_hours_is_flagged_once():
    state = empty_state("m:2", 0.0, "s")
    state["live"]["kind"] = "new"
    champion = Champion("m:2", True, False, MIX)
    slow = [worker(1, live={"m:2": stats(60, MIX_COUNTS, ms=900.0)})]
    decided = plan(state, champion, slow, 60.0, SETTINGS)
    (event,) = decided.events
    assert (
        event["event"] == "regression"
        and "p95 latency 900 ms over the 300 ms SLO" in (event["reason"])
    )
    assert not plan(decided.state, champion, slow, 61.0, SETTINGS).events  # once
    # past its first hours, or a rollback (an old model), nothing is flagged
    assert not plan(state, champion, slow, 3 * 3600.0, SETTINGS).events
    state["live"]["kind"] = "rollback"
    assert not plan(state, champion, slow, 60.0, SETTINGS).events


def test_label_shift_is_total_variation():
    assert label_shift({"a": 5, "b": 5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert label_shift({"a": 10}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.5)
    assert label_shift({}, {"a": 1.0}) is None


def test_settings_are_checked_with_the_variable_named(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTOPS_SHADOW_MAX_LABEL_SHIFT", "2")
    with pytest.raises(ValueError, match="TEXTOPS_SHADOW_MAX_LABEL_SHIFT='2': .* less than or"):
        service_settings()
    monkeypatch.delenv("TEXTOPS_SHADOW_MAX_LABEL_SHIFT")
    monkeypatch.setenv("TEXTOPS_FOLLOW_STORE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="TEXTOPS_FOLLOW_STORE=.* is not a folder"):
        RolloutSettings.of(service_settings(), tmp_path)
    monkeypatch.delenv("TEXTOPS_FOLLOW_STORE")
    monkeypatch.setenv("TEXTOPS_FOLLOW", "maybe")
    with pytest.raises(ValueError, match="TEXTOPS_FOLLOW='maybe': Input should be a valid bool"):
        service_settings()
    monkeypatch.delenv("TEXTOPS_FOLLOW")
    monkeypatch.setenv(
        "BENTOML_CONTAINERIZED", "true"
    )  # a built image serves what it was built with
    assert not RolloutSettings.of(service_settings(), tmp_path).follow
    monkeypatch.setenv("TEXTOPS_FOLLOW_STORE", str(tmp_path))
    followed = RolloutSettings.of(service_settings(), tmp_path)
    assert followed.follow and followed.store == tmp_path
    assert followed.folder == tmp_path / "textops-rollout" / "default"


def test_the_followed_champion_skips_models_this_deployment_rejected(tmp_path):
    """A model that failed to load here stays approved in the registry; when the live model is
    withdrawn, the deployment rolls back to the newest approved model it can serve."""
    import yaml

    from bento.follower import Follower
    from textops_core.registry import write_checksums

    for i, (version, labels) in enumerate(
        [("old", {"approved": "true"}), ("live", {"approved": "false", "withdrawn": "true"}),
         ("broken", {"approved": "true"})]
    ):  # fmt: skip
        folder = tmp_path / "textops-classifier" / version
        folder.mkdir(parents=True)
        info = {"creation_time": f"2026-12-0{i + 1}T00:00:00+00:00", "labels": labels}
        (folder / "model.yaml").write_text(yaml.safe_dump(info))
        (folder / "model.onnx").write_bytes(b"weights")
        write_checksums(folder)
    follower = Follower.__new__(Follower)
    follower.models_folder = tmp_path
    skipped: list[dict[str, str]] = []
    follower._skipped = skipped.append
    rejected = {"textops-classifier:broken": "not served: its files do not match"}
    champion = follower._read_registry("textops-classifier:live", rejected)
    assert champion.tag == "textops-classifier:old"
    assert skipped == [{}]  # every entry here is readable and intact
    assert not champion.live_approved and not champion.newer_than_live
    decided = plan(empty_state("textops-classifier:live", 0.0, "s"), champion, [], 1.0, SETTINGS)
    assert decided.state["candidate"]["kind"] == "rollback"
