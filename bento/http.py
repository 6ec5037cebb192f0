"""HTTP concerns of the service that BentoML leaves open: a request-size limit enforced before
the body is read, JSON-only request bodies, client errors logged as one line instead of an ERROR
with a traceback, a request timeout whose timer is let go once the request is answered, and
connections that must start a request, and finish its headers, in bounded time."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Collection

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
        await self.app(scope, replaying(b"".join(chunks), receive), send)

    async def _refuse(self, send) -> None:
        message = f"request body over {self.max_bytes} bytes (TEXTOPS_MAX_BODY_BYTES)"
        await answer_error(send, 413, message, close=True)


async def answer_error(send, status: int, message: str, close: bool = False) -> None:
    """An error answered as `{"error": message}`; `close` when the body was left unread."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def replaying(body: bytes, receive):
    """An ASGI `receive` that hands the app `body`, read already, then what `receive` brings
    (the client leaving)."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def read_body(receive) -> bytes | None:
    """The request's whole body; None when the client left before it was sent."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def is_json(content_type: bytes | None) -> bool:
    """Whether a Content-Type names JSON (`application/json`, `application/...+json`, with any
    parameters). None or empty counts as JSON: BentoML reads a body without one as JSON."""
    media = (content_type or b"").split(b";")[0].strip().lower()
    if not media:
        return True
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> None:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)


def duplicate_key(body: bytes) -> str | None:
    """A key that some object of the JSON `body` holds twice; None when none does, or when the
    body is no JSON this check can read (the service's own parser then says what is wrong)."""
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as found:
        return str(found.args[0])
    except (ValueError, RecursionError):
        return None
    return None


class JsonBodies:
    """ASGI middleware on the service's API routes (`paths`), which take JSON only: any other
    body gets 415 before BentoML reads it (it parses form and multipart bodies, and answered 500
    to one with more than 1,000 parts or no boundary), and a JSON object with a key twice gets
    400 (the service's parser keeps the last one; a proxy in front may have read the first)."""

    def __init__(self, app, paths: Collection[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        content_type = next((v for k, v in headers if k == b"content-type"), None)
        if not is_json(content_type):
            shown = content_type.decode("latin-1")[:100]
            message = f"the body must be JSON (content-type: application/json), got {shown!r}"
            await answer_error(send, 415, message, close=True)
            return
        body = await read_body(receive)
        if body is None:  # the client left
            return
        key = duplicate_key(body)
        if key is not None:
            await answer_error(send, 400, f"invalid JSON: the key {key[:100]!r} appears twice")
            return
        await self.app(scope, replaying(body, receive), send)


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
    a steady rate a worker keeps `timeout` seconds of requests alive, and the garbage
    collector's full passes over them stall a lone client's requests (benchmarks/serving.py,
    c=1 p99)."""

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


IDLE_TIMEOUT_ENV = "TEXTOPS_IDLE_TIMEOUT_S"
HEADER_TIMEOUT_ENV = "TEXTOPS_HEADER_TIMEOUT_S"


class ConnectionDeadlines:
    """Deadlines on uvicorn's HTTP/1.1 protocols (httptools' and h11's; mixed in before one):
    a connection that brings no request within `idle_timeout_s`, fresh or after an answer, is
    closed, and a request whose line and headers are not complete within `header_timeout_s` of
    its first byte gets 408 and its connection is closed. uvicorn arms its keep-alive timer
    only after an answer, so a connection that never sent anything stayed open, and it has no
    deadline on headers, so a client sending a header line a second held its connection (and a
    slot of the worker) for as long as it liked. The body is the request timeout's concern
    (AnsweredTimeout), as is everything after the headers."""

    idle_timeout_s: float
    header_timeout_s: float

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.idle_timeout_s
        self._waiting = True  # for a request's first byte
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._waiting and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's headers are complete
            self._waiting = False
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer when no pipelined request is left to answer
        if self.timeout_keep_alive_task is not None:
            self._waiting = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed already, or handed over to a WebSocket protocol
        message = (
            f"request headers not complete within {self.header_timeout_s:g} s "
            f"({HEADER_TIMEOUT_ENV})"
        ).encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
        )
        self.transport.close()


def with_deadlines(protocol: type, idle_timeout_s: float, header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol class `protocol` with ConnectionDeadlines."""
    return type(
        f"Deadline{protocol.__name__}",
        (ConnectionDeadlines, protocol),
        {"idle_timeout_s": idle_timeout_s, "header_timeout_s": header_timeout_s},
    )


def use_connection_deadlines(idle_timeout_s: float, header_timeout_s: float) -> None:
    """Make uvicorn serve HTTP with ConnectionDeadlines. BentoML starts uvicorn with its `auto`
    protocol (httptools where installed, else h11) and offers no setting for the protocol class,
    the keep-alive timeout (a `--timeout-keep-alive` option of `bentoml serve` only) or a header
    timeout; its worker imports the service before uvicorn resolves `auto`."""
    from uvicorn import config
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if not isinstance(getattr(config, "HTTP_PROTOCOLS", None), dict):
        raise RuntimeError(
            "uvicorn.config.HTTP_PROTOCOLS is gone: this uvicorn version chooses its protocol "
            "otherwise; check bento/http.py against it"
        )
    config.HTTP_PROTOCOLS["auto"] = with_deadlines(  # type: ignore[assignment]
        AutoHTTPProtocol, idle_timeout_s, header_timeout_s
    )
