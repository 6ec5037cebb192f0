"""The service's HTTP guards: the body-size limit and client errors logged as one line."""

import logging

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bento.http import BENTOML_HTTP_LOGGER, BodySizeLimit, client_error, quiet_client_errors


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
