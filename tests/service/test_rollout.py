"""`bentoml serve` following the registry under a client's steady traffic, with nobody restarting
it: an approval goes live after its shadow and a rollback comes back, with no failed request and
no answer mixing two models, both workers ending on the same tag; a model with corrupted weights
never serves; a shadow that collapses onto one class is withdrawn by itself."""

import os
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import copy_registered, free_port, tiny_rows
from tests.processes import bentoml_serve, run_script, running, two_worker_service
from tests.traffic import Traffic, wait_for
from textops_core.rollout import read_history, read_state

# A copy of a registered model published and approved as a new model; `corrupt` flips bytes of
# its int8 weights in the store after publishing (same size: what a bad disk does), `collapse`
# adds 50 to one class's logit bias in its ONNX graphs, a model that answers that class whatever
# it reads, with its approval's sample labels recorded as it answers them.
PUBLISH = """
import json, shutil, sys, tempfile
from pathlib import Path
import bentoml
import numpy as np
from textops_core.registry import approve, models_dir, publish_pending

served, how = bentoml.models.get(sys.argv[1]), sys.argv[2]
scratch = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(served.path, scratch, ignore=shutil.ignore_patterns("model.yaml", "checksums.json"))
if how == "collapse":
    import onnx
    from onnx import numpy_helper
    from textops_core.inference import load_predictor
    changed = 0
    for name in ("onnx/model.onnx", "onnx/model.int8.onnx"):
        graph = onnx.load(scratch / name)
        found = {i.name: i for i in graph.graph.initializer}
        for key in ("classifier.bias", "classifier.bias_quantized"):  # int8: int32 / its scale
            if key in found:
                bias = numpy_helper.to_array(found[key]).copy()
                scale = found.get(key + "_scale")
                step = 1.0 if scale is None else float(numpy_helper.to_array(scale).ravel()[0])
                bias[1] += np.array(50 / step).astype(bias.dtype)
                found[key].CopyFrom(numpy_helper.from_array(bias, key))
                changed += 1
        onnx.save(graph, scratch / name)
    assert changed == 2, changed
    sample = json.loads((scratch / "verification.json").read_text())
    for variant in [v for v in sample["variants"] if v != "pytorch"]:
        p = load_predictor(scratch, 128, variant).predict_proba(sample["texts"])
        top = np.sort(p, axis=1)
        sample["variants"][variant] = {
            "labels": p.argmax(1).tolist(), "margins": (top[:, -1] - top[:, -2]).tolist()
        }
    (scratch / "verification.json").write_text(json.dumps(sample))
tag = publish_pending(scratch, dict(served.info.labels), dict(served.info.metadata))
if how == "corrupt":
    weights = models_dir() / tag.replace(":", "/") / "onnx" / "model.int8.onnx"
    data = bytearray(weights.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4096):
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))
approve(tag)
print(tag)
"""
LABELS = "import sys, bentoml; print(bentoml.models.get(sys.argv[1]).info.labels)"
WITHDRAW = """
import sys
from textops_core.registry import withdraw
withdraw(sys.argv[1], "a spike of complaints", "on-call")
"""


@pytest.fixture(scope="module")
def deployment(approved_graph, tmp_path_factory):
    """Two workers following a model store of their own, shadowing 30 requests."""
    root = tmp_path_factory.mktemp("rollout")
    with two_worker_service(
        root,
        approved_graph["tag"],
        TEXTOPS_FOLLOW_INTERVAL_S="1",
        TEXTOPS_ROLLOUT_POLL_S="0.5",
        TEXTOPS_SHADOW_REQUESTS="30",
        TEXTOPS_SHADOW_MINUTES="3",
    ) as service:
        yield {**service, "folder": service["home"] / "textops-rollout" / "default"}


ROWS = tiny_rows(100_000, offset=10_000)  # the words the session's model learned, both classes


def pair(i: int) -> list[str]:
    """A positive and a negative tweet."""
    return [ROWS[(2 * i) % len(ROWS)][0], ROWS[(2 * i + 1) % len(ROWS)][0]]


def rejected(folder: Path, tag: str, what: str) -> str:
    """The reason the deployment rejected `tag`, once it has."""
    return wait_for(
        lambda: (read_state(folder) or {}).get("rejected", {}).get(tag), 120, f"{what}'s rejection"
    )


def workers_serving(folder: Path) -> set[str]:
    reports = [p.read_text() for p in (folder / "workers").glob("*.json")]
    return {re.search(r'"serving": "([^"]+)"', r).group(1) for r in reports}


def test_an_approval_goes_live_and_a_rollback_comes_back_with_no_failed_request(
    deployment, approved_graph
):
    url, env, folder, first = (
        deployment["url"], deployment["env"], deployment["folder"], approved_graph["tag"]
    )  # fmt: skip
    with Traffic(url, pair) as traffic:
        wait_for(lambda: traffic.served() == {first}, 120, "traffic")
        newer = run_script(PUBLISH, env, first, "copy")
        wait_for(lambda: traffic.served() == {newer}, 120, f"{newer} live")
        card = httpx.post(f"{url}/model", json={}, timeout=30).json()
        assert card["following"] and card["rollout"]["live"]["tag"] == newer
        assert card["rollout"]["live"]["reason"].startswith("shadow on ")
        assert card["verified"].startswith("checksums and ")
        assert card["variant_reason"]
        run_script(WITHDRAW, env, newer)
        wait_for(lambda: traffic.served() == {first}, 120, f"the rollback to {first}")
        time.sleep(2)
    assert set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
    assert all(len(set(answer)) == 1 for answer in traffic.answers)  # one model per request
    assert wait_for(lambda: workers_serving(folder) == {first}, 60, "both workers on one tag")
    assert len(list((folder / "workers").glob("*.json"))) == 2
    events = read_history(folder)
    went_live = [e for e in events if e["event"] == "live"]
    assert [e["tag"] for e in went_live][-2:] == [newer, first]
    shadowed = went_live[-2]["shadow"]
    assert shadowed["requests"] >= 30 and shadowed["errors"] == 0
    assert went_live[-1]["kind"] == "rollback" and went_live[-1]["shadow"] is None


def test_a_candidate_with_corrupted_weights_never_serves(deployment, approved_graph):
    url, env, folder = deployment["url"], deployment["env"], deployment["folder"]
    served = read_state(folder)["live"]["tag"]
    with Traffic(url, pair) as traffic:
        corrupted = run_script(PUBLISH, env, served, "corrupt")
        reason = rejected(folder, corrupted, "the corrupted model")
        time.sleep(2)
    assert set(traffic.statuses) == {200}
    assert {tag for answer in traffic.answers for tag in answer} == {served}
    assert "onnx/model.int8.onnx does not match its sha256" in reason
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    failures = re.findall(
        rf'^textops_model_load_failures_total\{{tag="{re.escape(corrupted)}"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert failures and float(failures[0]) >= 1
    log = deployment["output"].read_text()
    assert log.count(f"rollout: {corrupted} is not served") <= 2  # once per worker


def test_a_shadow_that_collapses_onto_one_class_is_withdrawn_by_itself(deployment, approved_graph):
    url, env, folder = deployment["url"], deployment["env"], deployment["folder"]
    served = read_state(folder)["live"]["tag"]
    with Traffic(url, pair) as traffic:
        collapsed = run_script(PUBLISH, env, served, "collapse")
        reason = rejected(folder, collapsed, "the collapsed model")
    assert set(traffic.statuses) == {200}
    assert {tag for answer in traffic.answers for tag in answer} == {served}
    assert reason.startswith("shadow: label mix {negative: 100%}"), reason
    labels = run_script(LABELS, env, collapsed)
    assert "'withdrawn': 'true'" in labels and "'withdrawn_by': 'textops-rollout'" in labels
    # its answers were logged as shadow, and monitoring reads only what clients got
    from assets.monitoring.log_window import read_serving_log

    log = env["TEXTOPS_SERVING_LOG"]
    shadowed = read_serving_log(log, shadow=True)[0]
    assert collapsed in shadowed.filter(shadowed["shadow"])["model_tag"].to_list()
    assert collapsed not in read_serving_log(log)[0]["model_tag"].to_list()


@pytest.mark.slow
def test_a_service_follows_a_mounted_store_of_another_home(approved_graph, tmp_path):
    """What an image given TEXTOPS_FOLLOW_STORE does: its own store holds no model; it serves
    the mounted store's champion, and the next one approved there (shadow off here)."""
    mounted = tmp_path / "mounted"
    copy_registered(approved_graph["tag"], mounted)
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "own"),
        "TEXTOPS_FOLLOW_STORE": str(mounted / "models"),
        "TEXTOPS_SERVING_LOG": "off",
        "TEXTOPS_WORKERS": "1",
        "TEXTOPS_FOLLOW_INTERVAL_S": "1",
        "TEXTOPS_SHADOW_REQUESTS": "0",
    }
    env.pop("TEXTOPS_MODEL_TAG", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serving = running(bentoml_serve(port), env, tmp_path / "serve.log", f"{url}/readyz")
    with serving, Traffic(url, pair) as traffic:
        wait_for(lambda: traffic.served() == {approved_graph["tag"]}, 120, "traffic")
        newer = run_script(
            PUBLISH, {**env, "BENTOML_HOME": str(mounted)}, approved_graph["tag"], "copy"
        )
        wait_for(lambda: traffic.served() == {newer}, 120, f"{newer} live")
    assert set(traffic.statuses) == {200}
    assert not (tmp_path / "own" / "models").exists() or not any(
        (tmp_path / "own" / "models").iterdir()
    )
