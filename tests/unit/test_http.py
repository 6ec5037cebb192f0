"""The service's HTTP guards: the body-size limit, client errors logged as one line, and the
request timeout that lets go of an answered request."""

import asyncio
import contextvars
import gc
import logging
import weakref

import pytest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bento.http import (
    BENTOML_HTTP_LOGGER,
    AnsweredTimeout,
    BodySizeLimit,
    client_error,
    quiet_client_errors,
    use_answered_timeout,
)
from tests.loops import run_in_own_thread


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
