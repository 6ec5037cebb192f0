"""Hostile requests and connections against the service: bodies that are not JSON, or JSON made
to hurt a parser, get a short 4xx and the service keeps answering; connections that bring no
request, or their headers a line at a time, are closed. (The same bodies in-process are in
test_service.py, whose client is the one ASGI app a test session may build: BentoML registers
its metrics once per process.)"""

import contextlib
import importlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bento.http import HEADER_TIMEOUT_ENV, IDLE_TIMEOUT_ENV
from tests.conftest import free_port
from tests.processes import ROOT, bentoml_serve, running
from tests.unit.test_http import held_open

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def multipart(parts: int) -> bytes:
    part = b'--b\r\nContent-Disposition: form-data; name="texts"\r\n\r\nhi\r\n'
    return part * parts + b"--b--\r\n"


def nested_multipart(depth: int) -> bytes:
    body = b"hi"
    for level in range(depth):
        body = (
            b'--b%d\r\nContent-Disposition: form-data; name="texts"\r\n'
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n%s\r\n--b%d--\r\n"
            % (level, level - 1, body, level)
        )
    return body


HOSTILE = {
    "deeply nested JSON": ("/classify", b"[" * 100_000, JSON),
    "deeply nested texts": ("/classify", b'{"texts":' + b"[" * 50_000 + b"]" * 50_000 + b"}", JSON),
    "deeply nested object": ("/classify", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, JSON),
    "deeply nested JSON to /model": ("/model", b"[" * 100_000, JSON),
    "form with 5,000 fields": ("/classify", b"&".join([b"texts=hi"] * 5000), FORM),
    "form with deep keys": ("/classify", b"texts" + b"[a]" * 20_000 + b"=x", FORM),
    "multipart with 5,000 parts": ("/classify", multipart(5000), "multipart/form-data; boundary=b"),
    "multipart nested 200 deep": (
        "/classify", nested_multipart(200), "multipart/form-data; boundary=b199"
    ),
    "multipart without a boundary": ("/classify", b"--x\r\n", "multipart/form-data"),
    "multipart to /model": ("/model", multipart(1), "multipart/form-data; boundary=b"),
    "text/plain": ("/classify", b'{"texts": ["hello"]}', "text/plain"),
    "XML": ("/classify", b"<texts><t>hello</t></texts>", "application/xml"),
    "invalid UTF-8": ("/classify", b'{"texts": ["\xff\xfe"]}', JSON),
    "a 5,000-digit number": ("/classify", b'{"texts": ["a"], "n": ' + b"9" * 5000 + b"}", JSON),
    "a float past the largest": ("/classify", b'{"texts": [1e999999]}', JSON),
    "NaN": ("/classify", b'{"texts": [NaN]}', JSON),
    "a lone surrogate": ("/classify", b'{"texts": ["\\ud800"]}', JSON),
    "a key twice": ("/classify", b'{"texts": ["a"], "texts": ["b"]}', JSON),
}  # fmt: skip
VALID = {"texts": ["@user tweet 901: such a wonderful day, happy too"]}


def assert_short_client_error(response: httpx.Response, case: str) -> None:
    """A 4xx whose body is a short JSON error, with no trace or path of the service's code."""
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert len(response.content) < 600, (case, response.text)
    assert response.json()["error"], case
    for leak in ("Traceback", 'File "', "site-packages", str(ROOT)):
        assert leak not in response.text, (case, response.text)


@pytest.fixture(scope="module")
def service(approved_graph):
    """bento.service, imported to serve the session's approved model (as test_service does)."""
    os.environ["TEXTOPS_MODEL_TAG"] = approved_graph["tag"]
    try:
        yield importlib.import_module("bento.service")
    finally:
        os.environ.pop("TEXTOPS_MODEL_TAG", None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)
requests = json_values | st.fixed_dictionaries(
    {"texts": json_values | st.lists(st.text(max_size=2100), max_size=300)}
)


@given(value=requests)
@settings(max_examples=300, deadline=None)
def test_any_json_is_a_request_or_a_validation_error(service, value):
    """Every API's request model reads any JSON value, and accepts only requests within the
    documented limits; what it refuses is a ValidationError (a 400), never another error."""
    body = json.dumps(value).encode()
    for name, api in service.TextClassifier.apis.items():
        try:
            request = api.input_spec.model_validate_json(body)
        except ValidationError:
            continue
        if name == "classify":
            texts = request.texts
            assert 1 <= len(texts) <= service.MAX_TEXTS
            assert all(0 < len(t) <= service.MAX_CHARS for t in texts)


@given(body=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_a_request_or_a_validation_error(service, body):
    for api in service.TextClassifier.apis.values():
        with contextlib.suppress(ValidationError):  # anything else fails the test
            api.input_spec.model_validate_json(body)


@pytest.fixture(scope="module")
def served(approved_graph, tmp_path_factory):
    """`bentoml serve` of the approved model with short connection deadlines: 2 s idle, 3 s for
    a request's headers."""
    port = free_port()
    env = {
        **os.environ,
        "TEXTOPS_MODEL_TAG": approved_graph["tag"],
        "TEXTOPS_WORKERS": "1",
        IDLE_TIMEOUT_ENV: "2",
        HEADER_TIMEOUT_ENV: "3",
    }
    log = tmp_path_factory.mktemp("hostile") / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with running(bentoml_serve(port), env, log, ready_url=f"{url}/readyz"):
        yield url, port, log


SLOW_HEADERS = [b"POST /classify HTTP/1.1\r\n"] + [b"x-slow-%d: 1\r\n" % i for i in range(60)]


def test_the_service_closes_silent_and_slow_header_connections_and_keeps_answering(served):
    url, port, _ = served
    with ThreadPoolExecutor(2) as pool:
        silent = pool.submit(held_open, port, [], 0.2, 30)
        slow = pool.submit(held_open, port, SLOW_HEADERS, 1.0, 30)
        with httpx.Client(base_url=url, timeout=30) as session:  # one kept-alive connection
            for _ in range(3):
                assert session.post("/classify", json=VALID).status_code == 200
        silent_s, silent_got = silent.result()
        slow_s, slow_got = slow.result()
    assert 1.5 < silent_s < 5 and silent_got == b""
    assert 2.5 < slow_s < 7 and slow_got.startswith(b"HTTP/1.1 408 Request Timeout")
    assert httpx.post(f"{url}/classify", json=VALID, timeout=30).status_code == 200


def test_the_served_service_answers_hostile_bodies_with_4xx_and_stays_up(served):
    url, _, log = served
    for case, (path, body, content_type) in HOSTILE.items():
        response = httpx.post(
            f"{url}{path}", content=body, headers={"content-type": content_type}, timeout=60
        )
        assert_short_client_error(response, case)
    assert httpx.post(f"{url}/classify", json=VALID, timeout=30).status_code == 200
    output = log.read_text()
    assert "Traceback" not in output and "ERROR" not in output
