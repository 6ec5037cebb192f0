"""The service's HTTP guards: the body-size limit, client errors logged as one line, and the
request timeout that lets go of an answered request."""

import asyncio
import contextlib
import contextvars
import gc
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bento.http import (
    BENTOML_HTTP_LOGGER,
    HEADER_TIMEOUT_ENV,
    IDLE_TIMEOUT_ENV,
    AnsweredTimeout,
    BodySizeLimit,
    ConnectionDeadlines,
    JsonBodies,
    client_error,
    duplicate_key,
    quiet_client_errors,
    use_answered_timeout,
    use_connection_deadlines,
    with_deadlines,
)
from tests.loops import run_in_own_thread
from textops_core.settings import service_settings


def app_with_limit(max_bytes: int):
    seen = []

    async def echo(request):
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"bytes": len(body)})

    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    return BodySizeLimit(app, max_bytes=max_bytes), seen


def test_bodies_over_the_limit_get_413_without_reaching_the_app():
    app, seen = app_with_limit(100)
    client = TestClient(app)
    assert client.post("/", content=b"x" * 100).json() == {"bytes": 100}
    refused = client.post("/", content=b"x" * 101)
    assert refused.status_code == 413 and "over 100 bytes" in refused.json()["error"]
    streamed = client.post("/", content=iter([b"x" * 60, b"x" * 60]))  # chunked, no length
    assert streamed.status_code == 413
    small_stream = client.post("/", content=iter([b"x" * 30, b"x" * 30]))
    assert small_stream.json() == {"bytes": 60}
    assert seen == [100, 60]


def app_taking_json():
    seen = []

    async def echo(request):
        seen.append(await request.body())
        return JSONResponse({"bytes": len(seen[-1])})

    app = Starlette(routes=[Route(p, echo, methods=["POST"]) for p in ("/api", "/other")])
    return JsonBodies(app, paths=["/api"]), seen


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "multipart/form-data", "application/xml", "application/vnd.bentoml+pickle"],
)  # fmt: skip
def test_a_body_that_is_not_json_gets_415_before_it_is_read(content_type):
    app, seen = app_taking_json()
    response = TestClient(app).post("/api", content=b"a=1", headers={"content-type": content_type})
    assert response.status_code == 415 and seen == []
    assert response.json()["error"].startswith("the body must be JSON")


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "Application/JSON; charset=utf-8",
                     "application/problem+json"],
)  # fmt: skip
def test_json_bodies_and_bodies_without_a_content_type_reach_the_service(content_type):
    app, seen = app_taking_json()
    headers = {"content-type": content_type} if content_type is not None else {}
    response = TestClient(app).post("/api", content=b'{"texts": ["a"]}', headers=headers)
    assert response.json() == {"bytes": 16} and seen == [b'{"texts": ["a"]}']


def test_a_json_object_with_a_key_twice_gets_400_and_other_paths_are_left_alone():
    app, seen = app_taking_json()
    client = TestClient(app)
    twice = b'{"texts": ["a"], "texts": ["b"]}'
    response = client.post("/api", content=twice, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "'texts' appears twice" in response.json()["error"]
    nested = b'{"a": [{"k": 1, "k": 2}]}'
    assert client.post("/api", content=nested).status_code == 400
    assert client.post("/other", content=twice, headers={"content-type": "text/plain"}).json()
    assert seen == [twice]


def test_what_is_not_json_is_left_to_the_services_own_parser():
    for body in (b"[" * 100_000, b"{", b'{"a": 1' + b"0" * 5000 + b"}", b"\xff\xfe", b""):
        assert duplicate_key(body) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


@given(st.binary())
@settings(max_examples=300)
def test_the_duplicate_key_check_never_raises_on_any_bytes(body):
    found = duplicate_key(body)
    assert found is None or isinstance(found, str)


@given(json_values)
def test_json_written_from_a_value_has_no_duplicate_key(value):
    assert duplicate_key(json.dumps(value).encode()) is None


@given(st.dictionaries(st.text(max_size=5), st.integers(), min_size=1), st.data())
def test_the_duplicate_key_check_finds_any_key_written_twice(obj, data):
    key = data.draw(st.sampled_from(sorted(obj)))
    pairs = [json.dumps(k) + ": " + json.dumps(v) for k, v in obj.items()]
    body = "{" + ", ".join([*pairs, json.dumps(key) + ": 0"]) + "}"
    assert duplicate_key(body.encode()) == key
    assert duplicate_key(json.dumps(obj).encode()) is None


class Body(BaseModel):
    texts: list[str]


def test_client_errors_become_one_info_line_and_server_errors_keep_their_trace(caplog):
    quiet_client_errors()
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    try:
        Body(texts=42)
    except ValidationError as error:
        bad = error
    assert client_error(bad)[0] == 400
    with caplog.at_level(logging.INFO, logger=BENTOML_HTTP_LOGGER):
        try:
            raise bad
        except ValidationError:
            logger.error("Exception on %s [%s]", "/classify", "POST", exc_info=True)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.error("Exception on %s [%s]", "/classify", "POST", exc_info=True)
    client, server = caplog.records[-2], caplog.records[-1]
    assert client.levelname == "INFO" and client.exc_info is None
    assert client.getMessage().startswith("POST /classify answered 400: 1 validation error(s)")
    assert server.levelname == "ERROR" and server.exc_info is not None


REQUEST = contextvars.ContextVar("request")


class Marker:
    """Stands for what a request's context holds (its tracing spans, scope and body)."""


async def answer(scope, receive, send, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def call(middleware) -> tuple[list[dict], weakref.ref]:
    """One request through `middleware`, with a context variable holding a marker, as the
    tracing middleware in front of it holds the request's span; the marker's weak reference."""
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    marker = Marker()
    token = REQUEST.set(marker)
    await middleware({"type": "http", "method": "POST", "path": "/"}, receive, send)
    REQUEST.reset(token)
    return sent, weakref.ref(marker)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_an_answered_request_lets_go_of_its_context_at_once(loop_kind):
    # uvicorn runs the service on uvloop where it is installed (the pipeline's environment),
    # on asyncio's own loop otherwise (the ONNX image)
    if loop_kind == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    else:
        loop_factory = None  # asyncio's own

    async def answered_then_collected():
        sent, marker = await call(AnsweredTimeout(answer, timeout=30))
        await asyncio.sleep(0)  # one turn of the loop, which is still running
        gc.collect()
        return sent, marker() is None

    sent, released = run_in_own_thread(answered_then_collected(), loop_factory)
    assert sent[0]["status"] == 200
    assert released  # not held by a timer scheduled 30 s ahead


def test_a_request_past_the_timeout_gets_504_and_its_work_is_cancelled():
    cancelled = []

    async def slow(scope, receive, send):
        try:
            await answer(scope, receive, send, delay=5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def run():
        sent, _ = await call(AnsweredTimeout(slow, timeout=0.05))
        await asyncio.sleep(0)  # the cancelled work unwinds
        return sent

    sent = run_in_own_thread(run())
    assert sent[0]["status"] == 504 and b"0.05 seconds" in sent[1]["body"]
    assert cancelled == [True]


def test_bentoml_builds_the_answered_timeout_in_place_of_its_own():
    from bentoml._internal.server.base_app import BaseAppFactory

    use_answered_timeout()

    class Factory(BaseAppFactory):
        name = "probe"

    built = [m.cls for m in Factory(timeout=30).middlewares]
    assert AnsweredTimeout in built


# --- connection deadlines ------------------------------------------------------------------


async def hello(scope, receive, send) -> None:
    """Answers every request after `?delay=` seconds (0 by default)."""
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    await asyncio.sleep(float(query.removeprefix("delay=") or 0))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def protocols():
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    # the service's images have h11 only; the pipeline's environment has httptools too
    return [pytest.param(H11Protocol, id="h11"), pytest.param(HttpToolsProtocol, id="httptools")]


@contextlib.contextmanager
def uvicorn_serving(protocol: type, idle_s: float, header_s: float) -> Iterator[int]:
    """`hello` served by uvicorn with `protocol` under ConnectionDeadlines on a thread of its
    own; yields the port."""
    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    config = uvicorn.Config(
        hello, host="127.0.0.1", port=port, http=with_deadlines(protocol, idle_s, header_s),
        lifespan="off", log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def held_open(port: int, lines: list[bytes], every_s: float, limit_s: float) -> tuple[float, bytes]:
    """(seconds until the server closed the connection, what it sent) for a client that sends
    `lines` one every `every_s` seconds, then nothing; `limit_s` if it is still open then."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(every_s)
        started, received, pending = time.monotonic(), b"", list(lines)
        while time.monotonic() - started < limit_s:
            if pending:
                client.sendall(pending.pop(0))
            try:
                data = client.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                return time.monotonic() - started, received
            received += data
        return limit_s, received


GET = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n"


@pytest.mark.parametrize("protocol", protocols())
def test_a_silent_connection_is_closed_after_the_idle_timeout(protocol):
    with uvicorn_serving(protocol, idle_s=0.5, header_s=30) as port:
        open_s, received = held_open(port, [], every_s=0.1, limit_s=10)
    assert 0.4 < open_s < 2.5 and received == b""


@pytest.mark.parametrize("protocol", protocols())
def test_headers_sent_a_line_at_a_time_get_408_at_the_header_timeout(protocol):
    slow = [b"GET / HTTP/1.1\r\n"] + [b"x-slow-%d: 1\r\n" % i for i in range(100)]
    with uvicorn_serving(protocol, idle_s=0.5, header_s=1.5) as port:
        open_s, received = held_open(port, slow, every_s=0.2, limit_s=10)
    assert 1.4 < open_s < 4 and received.startswith(b"HTTP/1.1 408 ")
    assert b"TEXTOPS_HEADER_TIMEOUT_S" in received


def answers(client: socket.socket, count: int) -> bytes:
    """What the server sent until `count` answers were complete."""
    received = b""
    while received.count(b"hello") < count:
        data = client.recv(4096)
        if not data:
            break
        received += data
    return received


@pytest.mark.parametrize("protocol", protocols())
def test_requests_keep_their_connection_and_take_longer_than_the_header_timeout(protocol):
    """Keep-alive within the idle timeout, answers slower than the header timeout, and
    pipelined requests are all served; then the idle timeout closes the connection."""
    slow = b"GET /?delay=1.2 HTTP/1.1\r\nhost: test\r\n\r\n"
    with (
        uvicorn_serving(protocol, idle_s=0.8, header_s=0.5) as port,
        socket.create_connection(("127.0.0.1", port)) as client,
    ):
        client.settimeout(10)
        for requests in ([GET], [slow], [slow, GET]):
            client.sendall(b"".join(requests))
            received = answers(client, len(requests))
            assert received.count(b"HTTP/1.1 200 OK") == len(requests), received
            time.sleep(0.3)
        started = time.monotonic()
        assert client.recv(4096) == b""  # closed by the idle timeout
        assert time.monotonic() - started < 2.5


def test_uvicorn_serves_with_the_deadlines_once_they_are_in_use(monkeypatch):
    import uvicorn
    from uvicorn import config

    monkeypatch.setitem(config.HTTP_PROTOCOLS, "auto", config.HTTP_PROTOCOLS["auto"])
    use_connection_deadlines(3, 4)
    loaded = uvicorn.Config(hello)
    loaded.load()
    protocol = loaded.http_protocol_class
    assert issubclass(protocol, ConnectionDeadlines)
    assert (protocol.idle_timeout_s, protocol.header_timeout_s) == (3, 4)


@pytest.mark.parametrize("value", ["0", "-2", "soon", "inf", "nan"])
@pytest.mark.parametrize("name", [IDLE_TIMEOUT_ENV, HEADER_TIMEOUT_ENV])
def test_a_timeout_that_is_no_positive_finite_number_is_refused_by_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}=.{value}.: Input should be"):
        service_settings()


def test_timeouts_default_to_5_s_idle_and_10_s_for_headers(monkeypatch):
    monkeypatch.delenv(IDLE_TIMEOUT_ENV, raising=False)
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "2.5")
    settings = service_settings()
    assert (settings.idle_timeout_s, settings.header_timeout_s) == (5.0, 2.5)
