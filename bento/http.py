"""HTTP concerns of the service that BentoML leaves open: a request-size limit enforced before
the body is read, client errors logged as one line instead of an ERROR with a traceback, and a
request timeout whose timer is let go once the request is answered."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging

# BentoML logs every failed request through this logger, client errors included.
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"


class BodySizeLimit:
    """ASGI middleware: a body longer than `max_bytes` gets 413 before the service parses it:
    from its Content-Length before anything is read, or, for a streamed (chunked) body, as soon
    as the part read so far passes the limit."""

    def __init__(self, app, max_bytes: int = 1 << 20) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No length announced: read up to the limit here, then hand the app what was read.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        body = json.dumps(
            {"error": f"request body over {self.max_bytes} bytes (TEXTOPS_MAX_BODY_BYTES)"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def client_error(error: BaseException | None) -> tuple[int, str] | None:
    """(status, one-line summary) when `error` is the client's fault (a 4xx), else None."""
    if error is None:
        return None
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        first = error.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return 400, f"{error.error_count()} validation error(s), first at {where}: {first['msg']}"
    status = getattr(getattr(error, "error_code", None), "value", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status, str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return None


class _ClientErrorsAsOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        found = client_error(record.exc_info[1] if record.exc_info else None)
        if found is None:
            return True
        status, summary = found
        args = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else "??"
        path, method = args
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "%s %s answered %d: %s", (method, path, status, summary)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Log client errors (400, 413, 429 ...) as one INFO line; server errors keep their trace."""
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, _ClientErrorsAsOneLine) for f in logger.filters):
        logger.addFilter(_ClientErrorsAsOneLine())


def _timed_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError)


class AnsweredTimeout:
    """ASGI middleware: a request not answered within `timeout` seconds is cancelled and gets 504
    (BentoML's traffic timeout), and its timer is cancelled as soon as the response starts.
    BentoML 1.4's own TimeoutMiddleware leaves every request's timer scheduled for the whole
    timeout, and the timer holds the request's context (its tracing spans, scope and body): at
    a steady rate a worker keeps `timeout` seconds of requests alive, 30 s of them are about
    150 MB at 1,000 req/s, and the garbage collector's full passes over them stalled a lone
    client's requests by 60-360 ms every few seconds (benchmarks/serving.py, c=1 p99)."""

    def __init__(self, app, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        # an empty context: the timer must not hold the request's (asyncio keeps a cancelled
        # timer's context until it cleans its heap; uvloop lets go at once)
        timer = loop.call_later(self.timeout, _timed_out, waiter, context=contextvars.Context())

        async def answered(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, answered))
        try:
            await waiter
        except TimeoutError:
            if task.cancel():
                from starlette.responses import JSONResponse

                answer = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(answer, status_code=504)(scope, receive, send)
            return
        finally:
            timer.cancel()
            if not waiter.done():  # this coroutine itself was cancelled (client gone)
                task.cancel()
        await task


def use_answered_timeout() -> None:
    """Make BentoML build AnsweredTimeout where it builds its TimeoutMiddleware (the server app
    looks the class up in its traffic module when it assembles its middleware)."""
    from bentoml._internal.server.http import traffic

    if not isinstance(getattr(traffic, "TimeoutMiddleware", None), type):
        raise RuntimeError(
            "bentoml._internal.server.http.traffic.TimeoutMiddleware is gone: this BentoML "
            "version assembles its timeout otherwise; check bento/http.py against it"
        )
    traffic.TimeoutMiddleware = AnsweredTimeout
