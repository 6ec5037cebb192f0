"""The BentoML service in-process (ASGI) and as a real `bentoml serve` subprocess."""

import importlib
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import free_port
from tests.processes import ROOT, bentoml_serve, running
from tests.service.test_hostile_requests import HOSTILE, assert_short_client_error
from textops_core.live import LoadOptions

CLEAR = [
    "@user tweet 901: such a wonderful day, happy too",
    "@user tweet 902: such a horrible day, cruel too",
    "@user tweet 903: such a brilliant day, love too",
]
EXPECTED = ["positive", "negative", "positive"]
BAD_REQUESTS = {
    "empty list": {"texts": []},
    "empty text": {"texts": ["   "]},
    "oversize text": {"texts": ["x" * 2001]},
    "too many items": {"texts": ["hi"] * 257},
    "wrong type": {"texts": [42]},
    "missing field": {"text": ["hi"]},
}


@pytest.fixture(scope="module")
def client(approved_graph):
    os.environ["TEXTOPS_MODEL_TAG"] = approved_graph["tag"]
    try:
        service = importlib.import_module("bento.service")
        with TestClient(service.TextClassifier.to_asgi()) as test_client:
            yield test_client
    finally:
        os.environ.pop("TEXTOPS_MODEL_TAG", None)


def test_classify_returns_labels_scores_and_probabilities_in_order(client):
    response = client.post("/classify", json={"texts": CLEAR})
    assert response.status_code == 200, response.text
    results = response.json()
    assert [r["label"] for r in results] == EXPECTED
    for result in results:
        assert set(result["probabilities"]) == {"positive", "negative"}
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["score"] == max(result["probabilities"].values())


def test_predictions_are_logged_for_drift_monitoring(client):
    from assets.monitoring.log_window import read_serving_log

    marker = "@user tweet 977: such a kind day, sunny too"
    assert client.post("/classify", json={"texts": [marker]}).status_code == 200
    # written by the log's own thread, after the answer
    deadline = time.monotonic() + 30
    while True:
        frame, torn = read_serving_log(Path(os.environ["TEXTOPS_SERVING_LOG"]))
        logged = frame.filter(frame["text"] == marker)
        if logged.height or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert logged.height == 1 and torn == 0
    assert logged["label"][0] == "positive" and logged["latency_ms"][0] > 0
    assert logged["model_tag"][0] == client.post("/model", json={}).json()["tag"]


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_400_with_a_message(client, case):
    response = client.post("/classify", json=BAD_REQUESTS[case])
    assert response.status_code == 400
    assert response.json()["error"]


def test_malformed_json(client):
    response = client.post(
        "/classify", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.text


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_body_gets_a_short_client_error(client, case):
    path, body, content_type = HOSTILE[case]
    response = client.post(path, content=body, headers={"content-type": content_type})
    assert_short_client_error(response, case)
    assert client.post("/classify", json={"texts": CLEAR[:1]}).status_code == 200


def test_model_endpoint_shows_tag_and_lineage(client, approved_graph):
    card = client.post("/model", json={}).json()
    assert card["tag"] == approved_graph["tag"]
    assert card["labels"]["approved"] == "true"
    assert card["labels"]["data_version"] == approved_graph["splits"].version
    assert "macro_f1" in card["metrics"]


@pytest.mark.parametrize("variant", ["onnx-int8", "onnx-fp32", "pytorch"])
def test_the_service_answers_on_every_variant(approved_graph, tmp_path, variant):
    port = free_port()
    env = {**os.environ, "TEXTOPS_MODEL_TAG": approved_graph["tag"], "TEXTOPS_VARIANT": variant}
    url = f"http://127.0.0.1:{port}"
    with running(bentoml_serve(port), env, tmp_path / "serve.log", ready_url=f"{url}/readyz"):
        assert httpx.post(f"{url}/model", json={}, timeout=30).json()["variant"] == variant
        response = httpx.post(f"{url}/classify", json={"texts": CLEAR}, timeout=30)
        assert response.status_code == 200, response.text
        assert [r["label"] for r in response.json()] == EXPECTED


def test_the_benchmarks_adaptive_batching_answers_each_request_with_its_own_texts(
    approved_graph, tmp_path
):
    """benchmarks/adaptive_batching.py, the batcher the service's is measured against: BentoML
    merges concurrent requests' texts (and splits one larger than its batch) and hands every
    request back its own answers, in order, as the service would."""
    import concurrent.futures

    port = free_port()
    env = {**os.environ, "TEXTOPS_MODEL_TAG": approved_graph["tag"]}
    url = f"http://127.0.0.1:{port}"
    requests = [CLEAR[i % 3 :] + CLEAR[: i % 3] for i in range(12)] + [CLEAR * 85 + CLEAR[:1]]

    def classify(texts):
        response = httpx.post(f"{url}/classify", json={"texts": texts}, timeout=60)
        assert response.status_code == 200, response.text
        return [r["label"] for r in response.json()]

    service = bentoml_serve(port, "benchmarks.adaptive_batching:AdaptiveBatching")
    with (
        running(service, env, tmp_path / "serve.log", ready_url=f"{url}/readyz"),
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        answers = list(pool.map(classify, requests))
    for texts, labels in zip(requests, answers, strict=True):
        assert labels == [EXPECTED[CLEAR.index(t)] for t in texts]
    assert len(answers[-1]) == 256


def test_the_approved_variant_is_served_unless_one_is_pinned(client, approved_graph):
    from textops_core.inference import serving_settings
    from textops_core.registry import approved_models

    model = next(m for m in approved_models() if str(m.tag) == approved_graph["tag"])
    chosen = serving_settings(Path(model.path))["variant"]
    assert client.post("/model", json={}).json()["variant"] == chosen
    assert model.info.labels["serving_variant"] == chosen


def test_the_service_lets_go_of_answered_requests_and_of_its_start_up_objects(client):
    import gc

    from bento.http import AnsweredTimeout

    middleware = [m.cls for m in client.app.user_middleware]
    assert AnsweredTimeout in middleware  # BentoML's timeout keeps each request for 30 s
    assert gc.get_freeze_count() > 0  # the loaded libraries are out of the collector's scans


def test_a_body_over_the_limit_gets_413_before_it_is_read(client):
    huge = {"texts": ["x" * 1000] * 1100}  # about 1.1 MB, over the 1 MiB default
    response = client.post("/classify", json=huge)
    assert response.status_code == 413
    assert "request body over 1048576 bytes" in response.json()["error"]
    assert client.post("/classify", json={"texts": CLEAR[:1]}).status_code == 200


@pytest.fixture(scope="module")
def served(approved_graph, tmp_path_factory):
    port = free_port()
    env = {**os.environ, "TEXTOPS_MODEL_TAG": approved_graph["tag"]}
    log = tmp_path_factory.mktemp("serve") / "bentoml-serve.log"
    with running(bentoml_serve(port), env, log, ready_url=f"http://127.0.0.1:{port}/readyz"):
        yield f"http://127.0.0.1:{port}", log


def test_served_over_http(served):
    served, _ = served
    response = httpx.post(f"{served}/classify", json={"texts": CLEAR}, timeout=30)
    assert response.status_code == 200
    assert [r["label"] for r in response.json()] == EXPECTED
    for path in ("/livez", "/readyz", "/metrics", "/docs.json", "/docs"):
        assert httpx.get(f"{served}{path}", timeout=10, follow_redirects=True).status_code == 200, (
            path
        )
    docs = httpx.get(f"{served}/docs", timeout=10, follow_redirects=True)
    assert "swagger" in docs.text.lower()
    assert "bentoml_service_request" in httpx.get(f"{served}/metrics", timeout=10).text


def test_served_rejects_bad_requests_and_stays_up(served):
    served, _ = served
    for case, body in BAD_REQUESTS.items():
        response = httpx.post(f"{served}/classify", json=body, timeout=30)
        assert response.status_code == 400, case
    garbage = httpx.post(
        f"{served}/classify", content=b"{", timeout=30, headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400
    assert (
        httpx.post(f"{served}/classify", json={"texts": CLEAR[:1]}, timeout=30).status_code == 200
    )


def test_served_model_endpoint(served, approved_graph):
    served, _ = served
    card = httpx.post(f"{served}/model", json={}, timeout=30).json()
    assert card["tag"] == approved_graph["tag"]


def test_serve_without_an_approved_model_says_what_to_do(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "empty-store")}
    env.pop("TEXTOPS_MODEL_TAG", None)
    result = subprocess.run(
        bentoml_serve(free_port()),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no approved 'textops-classifier' model in the BentoML store" in output
    assert "run the pipeline until approved_model approves one" in output


def test_a_bad_request_is_one_log_line_and_an_oversize_body_is_refused(served):
    url, log = served
    marker = "bad-request-marker-" + os.urandom(4).hex()
    response = httpx.post(f"{url}/classify", json={"texts": [], "note": marker}, timeout=30)
    assert response.status_code == 400
    streamed = httpx.post(
        f"{url}/classify",
        content=iter([b'{"texts": ["', b"y" * (1 << 20), b'"]}']),  # chunked: no length
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert streamed.status_code == 413
    assert httpx.post(f"{url}/classify", json={"texts": CLEAR[:1]}, timeout=30).status_code == 200
    text = log.read_text()
    assert "POST /classify answered 400: 1 validation error(s)" in text
    assert "Traceback" not in text and "ERROR" not in text


def test_a_model_missing_from_the_store_is_named_with_the_store_and_never_fetched(
    client, tmp_path, model_store_at
):
    """BentoML's model reference pulls a model missing from the store from BentoCloud: a worker
    restarted after its model's folder was removed failed with "No cloud context default
    found". The service's reference reads the store only, and says which model and where."""
    from textops_core.live import ModelNotInStore

    service = importlib.import_module("bento.service")
    model_store_at(tmp_path / "emptied")
    reference = service.StoreModel("textops-classifier:gone")
    named = f"model textops-classifier:gone is not in the BentoML model store at {tmp_path}"
    for resolve in (reference.resolve, reference.to_info):
        with pytest.raises(ModelNotInStore) as raised:
            resolve()
        assert named in str(raised.value) and "cloud" not in str(raised.value).lower()


def test_serve_with_a_pinned_model_missing_from_the_store_names_it_and_the_store(tmp_path):
    home = tmp_path / "emptied"
    env = {**os.environ, "BENTOML_HOME": str(home), "TEXTOPS_MODEL_TAG": "textops-classifier:gone"}
    result = subprocess.run(
        bentoml_serve(free_port()), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"model textops-classifier:gone is not in the BentoML model store at {home}" in output
    assert "cloud context" not in output


def test_a_following_worker_whose_models_are_gone_starts_on_another_approved_one(
    client, approved_graph, tmp_path, monkeypatch, model_store_at
):
    """A worker restarted after the live and start models' folders were removed starts on the
    newest approved model the store still holds; with none left it fails naming the store."""
    import shutil

    from tests.conftest import copy_registered
    from textops_core.live import ModelNotInStore
    from textops_core.rollout import RolloutSettings
    from textops_core.settings import service_settings

    service = importlib.import_module("bento.service")
    home = tmp_path / "bentoml"
    kept = copy_registered(approved_graph["tag"], home)
    model_store_at(home)
    monkeypatch.setattr(service, "ROLLOUT", RolloutSettings.of(service_settings(), home))
    monkeypatch.setattr(service, "START", "textops-classifier:gone")
    worker = object.__new__(service.TextClassifier.inner)
    worker.loading = LoadOptions(threads=1, micro_batch=32)
    worker.model_failures = service.model_failure_counter()
    assert worker._first_model().tag == approved_graph["tag"]
    shutil.rmtree(kept)
    with pytest.raises(
        ModelNotInStore,
        match=re.escape(f"no model to start on in the BentoML model store at {home}"),
    ):
        worker._first_model()
