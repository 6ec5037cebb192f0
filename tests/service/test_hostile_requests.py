"""Hostile connections against the service: connections that bring no request, or their
headers a line at a time, are closed, and requests keep being answered."""

import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bento.http import HEADER_TIMEOUT_ENV, IDLE_TIMEOUT_ENV
from tests.conftest import free_port
from tests.processes import bentoml_serve, running
from tests.unit.test_http import held_open

VALID = {"texts": ["@user tweet 901: such a wonderful day, happy too"]}


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
