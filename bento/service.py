"""The textops classifier as a BentoML service: the newest approved model on the fastest serving
variant that passed its parity check (ONNX Runtime int8 on a CPU, as a rule), loaded once.

Requests go through a greedy micro-batcher: a lone request runs at once, and requests that
arrive while the model is busy run together next, so one client never waits for company and a
crowd is served in batches. Past the queue limit requests get 429 at once; bodies over the size
limit get 413 before they are read.

The model is resolved once, in the process that starts the workers, and handed to every worker
(TEXTOPS_MODEL_TAG), so a deployment serves one model even when a worker restarts after a later
approval. Predictions are logged on a thread of their own after they are answered; a log that
cannot be written is counted (textops_prediction_log_failed_records_total on /metrics) and never
fails a request.

Settings (environment, read at start):
  TEXTOPS_MODEL_TAG        serve this model tag instead of the newest approved one
  TEXTOPS_VARIANT          onnx-int8, onnx-fp32 or pytorch instead of the approved choice
  TEXTOPS_WORKERS          service processes (0: one per physical core)
  TEXTOPS_THREADS          inference threads per process (0: the physical cores shared out)
  TEXTOPS_MICRO_BATCH      texts per length-sorted micro-batch
  TEXTOPS_MAX_BATCH_SIZE   most texts run together
  TEXTOPS_BATCHING         greedy (the service's batcher) or bentoml (BentoML's adaptive one)
  TEXTOPS_MAX_QUEUE        most texts waiting before requests are refused with 429
  TEXTOPS_MAX_BODY_BYTES   largest request body (larger: 413)
  TEXTOPS_SERVING_LOG      the prediction log's folder (`off` disables it)
  TEXTOPS_SERVING_LOG_TEXT 0 keeps texts out of the log
  TEXTOPS_SERVING_LOG_MAX_AGE_DAYS, TEXTOPS_SERVING_LOG_MAX_MB  the log's retention
  TEXTOPS_ACCESS_LOG       1 logs every request (BentoML's access log; off by default)
  TEXTOPS_ORT_SPIN         0 stops ONNX Runtime's threads from spinning while they wait
  TEXTOPS_RUNTIME_CHECK    warn (default) or refuse: what to do when onnxruntime, torch,
                           transformers, tokenizers or numpy differ from the versions the
                           model's parity check ran under (serving.json)
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, Field, StringConstraints

from bento.batching import GreedyBatcher, Overloaded
from bento.http import BodySizeLimit, quiet_client_errors, use_answered_timeout
from bento.inference import label_names, load_predictor, serving_settings
from bento.registry import pin_serving_tag
from bento.runtime import check_runtime
from bento.serving_log import LOG_TEXT_ENV, Retention, ServingLog, default_log_dir
from bento.settings import env_int

use_answered_timeout()  # before BentoML assembles the server app's middleware

MAX_TEXTS = 256
MAX_CHARS = 2000
# Requests waiting to be written to the prediction log; past this (a disk that hangs), their
# records are dropped and counted instead of piling up in memory.
LOG_BACKLOG = 1024

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CHARS)]
Texts = Annotated[
    list[Text],
    Field(
        min_length=1,
        max_length=MAX_TEXTS,
        description=f"1 to {MAX_TEXTS} texts of 1 to {MAX_CHARS} characters (after trimming)",
        json_schema_extra={"example": ["What a wonderful day!", "I hate waiting in line."]},
    ),
]


def _physical_cores() -> int:
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(psutil.cpu_count(logical=False) or 1, usable or 1))


# On CPUs, one process per physical core with one inference thread each serves the most
# requests: the processes overlap one another's tokenizing, HTTP and Python time, which one
# process with a thread per core leaves idle (2 cores: 157 vs 96 req/s at c=32, and a lone
# client's p99 no worse; see the README's serving table). A GPU image sets TEXTOPS_WORKERS=1.
WORKERS = env_int("TEXTOPS_WORKERS", 0, minimum=0) or _physical_cores()


def _threads() -> int:
    return env_int("TEXTOPS_THREADS", 0, minimum=0) or max(1, _physical_cores() // WORKERS)


# Which batcher runs concurrent requests together: `greedy`, the service's own (a lone request
# runs at once, what arrives meanwhile runs next; refuses with 429 past its queue), or `bentoml`,
# BentoML's adaptive batching (it waits up to an adaptive window to fill a batch).
# benchmarks/serving.py measured both on the same model and load (onnx-fp32, 2 cores), twice:
# req/s greedy / bentoml 0.94x at c=1, 0.95x at c=8, 0.99x at c=32, 1.02x at c=64 (p99 17 vs
# 16 ms, 79 vs 94, 275 vs 292, 400 vs 412), then 0.95x, 1.04x, 1.04x, 1.01x (p99 16 vs 15,
# 62 vs 68, 246 vs 241, 394 vs 379), no errors either way. A tie within run-to-run noise, so
# greedy stays the default for what it adds: a bounded queue that refuses at once with 429
# (BentoML's batcher has no queue bound; it cancels requests that waited past max_latency, a
# 503 after the wait).
BATCHING = os.environ.get("TEXTOPS_BATCHING", "greedy").strip().lower()
if BATCHING not in {"greedy", "bentoml"}:
    raise ValueError(f"TEXTOPS_BATCHING must be greedy or bentoml, got {BATCHING!r}")
MAX_BATCH = env_int("TEXTOPS_MAX_BATCH_SIZE", 64)


def classify_api(method):
    """The `classify` endpoint, batched by BentoML when TEXTOPS_BATCHING=bentoml (its texts
    lists concatenated across requests, up to MAX_BATCH texts, then split back)."""
    if BATCHING == "bentoml":
        return bentoml.api(
            batchable=True,
            batch_dim=0,
            max_batch_size=MAX_BATCH,
            max_latency_ms=env_int("TEXTOPS_MAX_LATENCY_MS", 10_000),
        )(method)
    return bentoml.api(method)


_METRICS: dict[str, Any] = {}


def log_failure_counter():
    """The Prometheus counter of prediction-log records not written, by reason (created once
    per process, after BentoML has set up its multiprocess metrics folder)."""
    if "log_failures" not in _METRICS:
        from prometheus_client import Counter

        _METRICS["log_failures"] = Counter(
            "textops_prediction_log_failed_records",
            "Prediction-log records not written (the prediction was answered)",
            ["reason"],
        )
    return _METRICS["log_failures"]


def _docs_redirect():
    """`/docs` opens BentoML's OpenAPI page, which it serves at `/` (spec at `/docs.json`)."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    async def docs(request):
        return RedirectResponse(url="/")

    return Starlette(routes=[Route("/", docs)])


class TooManyRequests(bentoml.exceptions.BentoMLException):
    """The queue is full: the client should retry shortly."""

    error_code = HTTPStatus.TOO_MANY_REQUESTS


class Prediction(BaseModel):
    label: str = Field(description="The most probable class")
    score: float = Field(description="Its probability")
    probabilities: dict[str, float] = Field(description="Probability of every class")


class ModelCard(BaseModel):
    tag: str
    labels: dict[str, str] = Field(description="Lineage: approval, data version, run, code")
    label_names: list[str]
    variant: str = Field(description="The serving variant: onnx-int8, onnx-fp32 or pytorch")
    metrics: dict[str, Any] = Field(description="The approving evaluation's numbers")


@bentoml.asgi_app(_docs_redirect(), path="/docs")
@bentoml.service(
    name="textops",
    workers=WORKERS,
    # Beyond this many requests in flight BentoML answers 503 at once; below it the batcher's
    # queue limit (429) is the one that applies.
    traffic={"timeout": 30, "max_concurrency": 512},
    # one line per request costs about a tenth of the throughput on 2 cores; the prediction log
    # keeps what monitoring needs
    logging={"access": {"enabled": os.environ.get("TEXTOPS_ACCESS_LOG", "0") == "1"}},
)
class TextClassifier:
    model_ref = bentoml.models.BentoModel(pin_serving_tag())

    def __init__(self) -> None:
        quiet_client_errors()
        stored = self.model_ref
        self.tag = str(stored.tag)
        self.info = stored.info
        path = Path(stored.path)
        settings = serving_settings(path)
        self.variant = os.environ.get("TEXTOPS_VARIANT") or settings["variant"]
        check_runtime(self.tag, self.variant, settings)
        self.label_names = label_names(path)
        self.predictor = load_predictor(
            path,
            int(self.info.metadata.get("max_length", settings.get("max_length", 128))),
            self.variant,
            threads=_threads(),
            micro_batch=env_int("TEXTOPS_MICRO_BATCH", 32),
        )
        self.predictor.predict_proba(["warm up"])  # first call allocates; not a client's cost
        self.log_failures = log_failure_counter()
        log_dir = default_log_dir()
        self.serving_log = (
            ServingLog(
                log_dir,
                os.environ.get(LOG_TEXT_ENV, "1") != "0",
                Retention.from_env(),
                on_failure=lambda records: self.log_failures.labels("write_error").inc(records),
            )
            if log_dir
            else None
        )
        self._log_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prediction-log")
        self._log_slots = threading.BoundedSemaphore(LOG_BACKLOG)
        if BATCHING == "greedy":
            self.batcher = GreedyBatcher(
                self._run, max_batch=MAX_BATCH, max_queue=env_int("TEXTOPS_MAX_QUEUE", 512)
            )
        else:  # BentoML's batches run here, one at a time (the model uses the cores itself)
            self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        # Everything loaded so far lives as long as the worker: moved out of the garbage
        # collector's sight, a full collection scans only what requests made since. Without it
        # each full pass over the libraries' objects stalled a request by about 60 ms every few
        # seconds (a lone client's p99).
        gc.collect()
        gc.freeze()

    def _run(self, texts: list[str]) -> np.ndarray:
        """One batch, on the inference thread."""
        return self.predictor.predict_proba(texts)

    def _log(self, texts: list[str], probabilities: np.ndarray, latency_ms: float) -> None:
        """Hand one answered request to the log's thread; never blocks, never raises."""
        if self.serving_log is None:
            return
        if not self._log_slots.acquire(blocking=False):
            self.log_failures.labels("backlog_full").inc(len(texts))
            return
        try:
            self._log_thread.submit(self._write_log, texts, probabilities, latency_ms)
        except RuntimeError:  # the service is shutting down
            self._log_slots.release()

    def _write_log(self, texts: list[str], probabilities: np.ndarray, latency_ms: float) -> None:
        try:
            assert self.serving_log is not None
            self.serving_log.append(
                self.tag,
                texts,
                [self.label_names[i] for i in probabilities.argmax(axis=1)],
                [
                    dict(zip(self.label_names, map(float, row), strict=True))
                    for row in probabilities
                ],
                latency_ms,
                uuid.uuid4().hex[:16],
            )
        finally:
            self._log_slots.release()

    @classify_api
    async def classify(self, texts: Texts) -> list[Prediction]:
        """Label, score and class probabilities of each text, in the order given."""
        started = time.perf_counter()
        if BATCHING == "bentoml":
            loop = asyncio.get_running_loop()
            probabilities = await loop.run_in_executor(self._inference, self._run, list(texts))
        else:
            try:
                probabilities = await self.batcher.submit(texts)
            except Overloaded as error:
                raise TooManyRequests(str(error)) from None
        self._log(texts, probabilities, (time.perf_counter() - started) * 1000)
        results = []
        for row in probabilities:
            best = int(row.argmax())
            results.append(
                Prediction(
                    label=self.label_names[best],
                    score=float(row[best]),
                    probabilities={
                        name: float(p) for name, p in zip(self.label_names, row, strict=True)
                    },
                )
            )
        return results

    @bentoml.api
    def model(self) -> ModelCard:
        """The served model's tag, lineage labels, serving variant and evaluation metrics."""
        return ModelCard(
            tag=self.tag,
            labels=dict(self.info.labels),
            label_names=self.label_names,
            variant=self.variant,
            metrics=dict(self.info.metadata.get("metrics", {})),
        )


TextClassifier.add_asgi_middleware(
    BodySizeLimit, max_bytes=env_int("TEXTOPS_MAX_BODY_BYTES", 1 << 20)
)
