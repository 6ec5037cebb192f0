"""The textops classifier as a BentoML service: the newest approved model on the fastest serving
variant that passed its parity check (ONNX Runtime int8 on a CPU, as a rule), loaded once.

Requests go through a greedy micro-batcher: a lone request runs at once, and requests that
arrive while the model is busy run together next, so one client never waits for company and a
crowd is served in batches. Past the queue limit requests get 429 at once; bodies over the size
limit get 413 before they are read, bodies that are not JSON 415 before they are parsed. A
connection that brings no request within the idle timeout is closed, and one whose request
headers take longer than the header timeout gets 408 and is closed.

The service follows the registry's champion by itself (bento/follower.py, textops_core/rollout.py):
a new champion is loaded and verified off the request path by every worker, answers live traffic in
shadow (its answers logged, never returned), and is promoted, every worker switching within a poll,
or withdrawn with the reason; a rollback is served as soon as it is verified. Each request is
answered wholly by one model, and each answer names it. With TEXTOPS_MODEL_TAG set (or
TEXTOPS_FOLLOW=off, and by default in a built image given no store to follow) it serves one model
until it is restarted. Predictions are logged on a thread of their own after they are answered; a
log that cannot be written is counted (textops_prediction_log_failed_records_total on /metrics)
and never fails a request.

Settings: the environment, read at start; every variable, with its default, is in
docs/configuration.md ("Service settings").

Bento argument (the bentofile's `args`, or `bentoml serve --arg`):
  gpus                     GPUs each worker runs on, declared as the service's resources
                           (bento/bentofile.gpu.yaml: 1)
"""

from __future__ import annotations

import gc
import logging
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
from bento.follower import Follower, Meter
from bento.http import (
    BodySizeLimit,
    JsonBodies,
    quiet_client_errors,
    use_answered_timeout,
    use_connection_deadlines,
)
from textops_core.live import (
    LoadOptions,
    ModelNotInStore,
    NotServable,
    ServedModel,
    load_served,
    not_in_store,
)
from textops_core.registry import (
    PINNED_TAG_ENV,
    NoApprovedModelError,
    StoredEntry,
    approved_entries,
    bentoml_home,
    models_dir,
    pin_serving_tag,
    read_entries,
    serving_tag,
    skipped_entries,
)
from textops_core.rollout import RolloutSettings, read_state
from textops_core.runtime import physical_cores
from textops_core.serving_log import Retention, ServingLog, default_log_dir
from textops_core.settings import service_settings

logger = logging.getLogger("textops.service")

use_answered_timeout()  # before BentoML assembles the server app's middleware
# The service's settings, read from the environment once, as the process starts.
SETTINGS = service_settings()
# before uvicorn resolves its HTTP protocol
use_connection_deadlines(SETTINGS.idle_timeout_s, SETTINGS.header_timeout_s)

MAX_TEXTS = 256
MAX_CHARS = 2000
# Requests waiting to be written to the prediction log; past this (a disk that hangs), their
# records are dropped and counted instead of piling up in memory.
LOG_BACKLOG = 1024
# Requests waiting for the candidate in shadow; past this (a candidate slower than the traffic)
# they are not shadowed: a shadow never queues work without bound behind the live model.
SHADOW_BACKLOG = 256

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


# On CPUs, one process per physical core with one inference thread each serves the most
# requests: the processes overlap one another's tokenizing, HTTP and Python time, which one
# process with a thread per core leaves idle (benchmarks/serving.py; docs/measurements.md).
# A GPU image sets TEXTOPS_WORKERS=1.
WORKERS = SETTINGS.workers or physical_cores()


def _threads() -> int:
    return SETTINGS.threads or max(1, physical_cores() // WORKERS)


class BentoArguments(BaseModel):
    """Settings fixed when the bento is built (its bentofile's `args`, kept in the bento), or
    given to `bentoml serve --arg`."""

    gpus: int = Field(
        0,
        ge=0,
        description="GPUs each worker runs on, declared to BentoML as the service's resources "
        "(BentoML gives each worker its own; BentoCloud picks a GPU instance); the GPU bento "
        "sets 1, the CPU bentos none",
    )


ARGUMENTS = bentoml.use_arguments(BentoArguments)


def declared_resources(arguments: BentoArguments) -> dict[str, Any]:
    """The service's `resources` setting: a GPU bento's GPUs, nothing for a CPU one."""
    return {"resources": {"gpu": arguments.gpus}} if arguments.gpus else {}


# The service's one batcher (bento/batching.py): a lone request runs at once, what arrives
# meanwhile runs next, refused with 429 past its queue. BentoML's adaptive batching ties with it
# on throughput and latency but has no queue bound; it is measured beside it from
# benchmarks/adaptive_batching.py (docs/measurements.md).
MAX_BATCH = SETTINGS.max_batch_size


START_TAG_ENV = "TEXTOPS_START_TAG"  # the model every worker starts on, resolved once


def start_tag(settings: RolloutSettings) -> str:
    """The model a following deployment starts on: the one its rollout state says is live, when
    that is still approved (a restart resumes where it was), else the registry's champion."""
    folder = settings.models_folder(models_dir())
    approved = approved_entries(folder)
    state = read_state(settings.folder)
    if state and any(e.tag == state["live"]["tag"] for e in approved):
        return state["live"]["tag"]
    if not approved:
        raise NoApprovedModelError(
            f"no approved 'textops-classifier' model in the BentoML store ({folder}): run the "
            f"pipeline until approved_model approves one (README, Quickstart), or set "
            f"{PINNED_TAG_ENV} to a model tag"
        )
    return approved[0].tag


def resolve_start() -> tuple[str, RolloutSettings | None]:
    """(the tag this worker starts on, how it follows the registry, None: it does not). The
    process that starts the workers resolves the tag and hands it to every worker it starts."""
    if os.environ.get(PINNED_TAG_ENV, "").strip():
        return pin_serving_tag(), None
    settings = RolloutSettings.of(SETTINGS, bentoml_home())
    if not settings.follow:
        return pin_serving_tag(), None
    tag = os.environ.get(START_TAG_ENV) or start_tag(settings)
    os.environ[START_TAG_ENV] = tag
    return tag, settings


START, ROLLOUT = resolve_start()


def own_tag() -> str | None:
    """The model this service packages into a bento: the start tag, unless that lives only in
    a followed store (then this store's newest approved model; None when it has none, and a
    service that only follows another store carries no model of its own)."""
    if ROLLOUT is None or ROLLOUT.store is None:
        return START
    try:
        return serving_tag()
    except NoApprovedModelError:
        return None


OWN_TAG = own_tag()


_METRICS: dict[str, Any] = {}


def counter(key: str, name: str, description: str, labels: list[str]):
    """A Prometheus counter, created once per process (after BentoML has set up its
    multiprocess metrics folder). prometheus_client directly, as BentoML 1.4 asks: its
    bentoml.metrics is deprecated and only forwards to it."""
    if key not in _METRICS:
        from prometheus_client import Counter

        _METRICS[key] = Counter(name, description, labels)
    return _METRICS[key]


def log_failure_counter():
    return counter(
        "log_failures",
        "textops_prediction_log_failed_records",
        "Prediction-log records not written (the prediction was answered)",
        ["reason"],
    )


def model_failure_counter():
    return counter(
        "model_failures",
        "textops_model_load_failures",
        "Models that failed to load or verify and were never served",
        ["tag"],
    )


def skipped_counter():
    return counter(
        "skipped",
        "textops_model_store_skipped_entries",
        "Entries of the model store a reader skipped as unreadable or damaged (each once per "
        "worker; the reason is in the worker's log)",
        ["tag"],
    )


def switch_counter():
    return counter(
        "switches", "textops_model_switches", "Times this worker switched its model", ["tag"]
    )


class Answered:
    """One batch's probabilities and the model that computed them; slicing keeps the model, so
    each request's share of a batch says which model answered it."""

    def __init__(self, probabilities: np.ndarray, model: ServedModel, ms: float) -> None:
        self.probabilities, self.model, self.ms = probabilities, model, ms

    def __getitem__(self, part: slice) -> Answered:
        return Answered(self.probabilities[part], self.model, self.ms)


def _docs_redirect():
    """`/docs` opens BentoML's OpenAPI page, which it serves at `/` (spec at `/docs.json`)."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    async def docs(request):
        return RedirectResponse(url="/")

    return Starlette(routes=[Route("/", docs)])


class StoreModel(bentoml.models.BentoModel):
    """A model reference resolved from this machine's BentoML model store only. BentoModel pulls
    a model missing from the store from BentoCloud, which this service never uses: a worker
    restarted after its model's folder was removed failed with "No cloud context default found"
    instead of naming the model and the store."""

    def resolve(self, base_path: str | os.PathLike | None = None) -> bentoml.Model:
        self._ensure_stored()
        return super().resolve(base_path)

    def to_info(self, alias: str | None = None):
        self._ensure_stored()
        return super().to_info(alias)

    def _ensure_stored(self) -> None:
        if self.stored is None:
            raise not_in_store(str(self.tag), models_dir())


class TooManyRequests(bentoml.exceptions.BentoMLException):
    """The queue is full: the client should retry shortly."""

    error_code = HTTPStatus.TOO_MANY_REQUESTS


class Prediction(BaseModel):
    label: str = Field(description="The most probable class")
    score: float = Field(description="Its probability")
    probabilities: dict[str, float] = Field(description="Probability of every class")
    model: str = Field(description="The tag of the model that answered")


class ModelCard(BaseModel):
    tag: str
    labels: dict[str, str] = Field(description="Lineage: approval, data version, run, code")
    label_names: list[str]
    variant: str = Field(description="The serving variant: onnx-int8, onnx-fp32 or pytorch")
    variant_reason: str = Field(description="Why this variant, on this machine")
    variant_timings: dict[str, dict[str, float]] = Field(
        description="texts/s of each variant that passed parity, timed here at load"
    )
    verified: str = Field(description="What was checked before the model took traffic")
    metrics: dict[str, Any] = Field(description="The approving evaluation's numbers")
    following: bool = Field(description="Whether the service follows the registry's champion")
    rollout: dict[str, Any] | None = Field(
        None, description="The deployment's rollout state: live since when, the candidate"
    )


@bentoml.asgi_app(_docs_redirect(), path="/docs")
@bentoml.service(
    name="textops",
    workers=WORKERS,
    # Beyond this many requests in flight BentoML answers 503 at once; below it the batcher's
    # queue limit (429) is the one that applies.
    traffic={"timeout": 30, "max_concurrency": 512},
    # one line per request costs about a tenth of the throughput on 2 cores; the prediction log
    # keeps what monitoring needs
    logging={"access": {"enabled": SETTINGS.access_log}},
    **declared_resources(ARGUMENTS),
)
class TextClassifier:
    if OWN_TAG is not None:
        model_ref = StoreModel(OWN_TAG)

    def __init__(self) -> None:
        quiet_client_errors()
        self.loading = LoadOptions.of(SETTINGS, _threads())
        self.model_failures = model_failure_counter()
        self._skipped: set[str] = set()
        self.live = self._first_model()
        self._count_skipped(skipped_entries())
        self.shadow: ServedModel | None = None
        self.meter = Meter()
        self.log_failures = log_failure_counter()
        log_dir = default_log_dir()
        self.serving_log = (
            ServingLog(
                log_dir,
                SETTINGS.serving_log_text,
                Retention.of(SETTINGS),
                on_failure=lambda records: self.log_failures.labels("write_error").inc(records),
            )
            if log_dir
            else None
        )
        self._log_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prediction-log")
        self._log_slots = threading.BoundedSemaphore(LOG_BACKLOG)
        # the candidate's answers run here, after the client's, one request at a time
        self._shadow_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(SHADOW_BACKLOG)
        self.batcher = GreedyBatcher(self._run, max_batch=MAX_BATCH, max_queue=SETTINGS.max_queue)
        self.follower = None
        if ROLLOUT is not None:
            self.follower = Follower(
                ROLLOUT,
                ROLLOUT.models_folder(models_dir()),
                self.live,
                self._load,
                self._switch,
                self._set_shadow,
                lambda tag, reason: self.model_failures.labels(tag).inc(),
                self.meter,
                self._count_skipped,
            )
            self.follower.start()
        # Everything loaded so far lives as long as the worker: moved out of the garbage
        # collector's sight, a full collection scans only what requests made since. Without it
        # each full pass over the libraries' objects stalls a request (a lone client's p99).
        gc.collect()
        gc.freeze()

    # --- models -----------------------------------------------------------------------------

    def _load(self, entry: StoredEntry) -> ServedModel:
        return load_served(entry.tag, entry.path, entry.labels, entry.metadata, self.loading)

    def _count_skipped(self, skipped: dict[str, str]) -> None:
        for tag in skipped.keys() - self._skipped:
            skipped_counter().labels(tag).inc()
        self._skipped |= skipped.keys()

    def _first_model(self) -> ServedModel:
        """The model this worker starts on: the pinned one, or, following, the deployment's live
        one (a worker restarted after a switch starts where the others are), else the tag
        resolved at start, else the newest approved model that loads (those two gone from the
        store since)."""
        if ROLLOUT is None:
            stored = self.model_ref
            entry = StoredEntry(
                str(stored.tag), Path(stored.path), dict(stored.info.labels),
                dict(stored.info.metadata), stored.info.creation_time,
            )  # fmt: skip
            return self._load(entry)
        folder = ROLLOUT.models_folder(models_dir())
        entries = {e.tag: e for e in read_entries(folder)}
        state = read_state(ROLLOUT.folder)
        chosen = list(dict.fromkeys([*([state["live"]["tag"]] if state else []), START]))
        model = self._start_on(chosen, entries, folder)
        if model is None:
            others = [e.tag for e in approved_entries(folder) if e.tag not in chosen]
            model = self._start_on(others, entries, folder)
        if model is None:
            raise ModelNotInStore(
                f"no model to start on in the BentoML model store at {folder}: "
                f"{' and '.join(chosen)} gone from it or not servable (logged above), and no "
                f"other approved model there could be served"
            )
        return model

    def _start_on(
        self, tags: list[str], entries: dict[str, StoredEntry], folder: Path
    ) -> ServedModel | None:
        """The first of `tags` in the store that loads; None when none does. The start tag
        there but failing its checks stops the worker."""
        for tag in tags:
            if tag not in entries:
                logger.error("not starting on %s: it is not in %s", tag, folder)
                continue
            try:
                return self._load(entries[tag])
            except NotServable as error:
                self.model_failures.labels(tag).inc()
                if tag == START:
                    raise
                logger.error("not starting on %s: %s", tag, error)
        return None

    def _switch(self, model: ServedModel) -> None:
        # one assignment: a batch already running keeps the model it started with
        self.live = model
        switch_counter().labels(model.tag).inc()

    def _set_shadow(self, model: ServedModel | None) -> None:
        self.shadow = model

    # --- requests ---------------------------------------------------------------------------

    def _run(self, texts: list[str]) -> Answered:
        """One batch, on the inference thread, wholly on the model live when it starts."""
        model = self.live
        started = time.perf_counter()
        probabilities = model.predictor.predict_proba(texts)
        return Answered(probabilities, model, (time.perf_counter() - started) * 1000)

    def _log(
        self, model: ServedModel, texts: list[str], probabilities: np.ndarray, latency_ms: float,
        shadow: bool = False,
    ) -> None:  # fmt: skip
        """Hand one answered request to the log's thread; never blocks, never raises."""
        if self.serving_log is None:
            return
        if not self._log_slots.acquire(blocking=False):
            self.log_failures.labels("backlog_full").inc(len(texts))
            return
        try:
            self._log_thread.submit(
                self._write_log, model, texts, probabilities, latency_ms, shadow
            )
        except RuntimeError:  # the service is shutting down
            self._log_slots.release()

    def _write_log(
        self, model: ServedModel, texts: list[str], probabilities: np.ndarray, latency_ms: float,
        shadow: bool,
    ) -> None:  # fmt: skip
        try:
            assert self.serving_log is not None
            self.serving_log.append(
                model.tag,
                texts,
                [model.label_names[i] for i in probabilities.argmax(axis=1)],
                [
                    dict(zip(model.label_names, map(float, row), strict=True))
                    for row in probabilities
                ],
                latency_ms,
                uuid.uuid4().hex[:16],
                shadow=shadow,
            )
        finally:
            self._log_slots.release()

    def _shadow(self, texts: list[str], answered: Answered) -> None:
        """The candidate in shadow answers the request too, in the background; its answer is
        measured and logged as shadow, never returned. Past the backlog it is skipped."""
        candidate = self.shadow
        if candidate is None or candidate is answered.model:
            return
        if not self._shadow_slots.acquire(blocking=False):
            return
        try:
            self._shadow_thread.submit(self._run_shadow, candidate, texts, answered)
        except RuntimeError:  # shutting down
            self._shadow_slots.release()

    def _run_shadow(self, candidate: ServedModel, texts: list[str], answered: Answered) -> None:
        try:
            started = time.perf_counter()
            probabilities = candidate.predictor.predict_proba(texts)
            ms = (time.perf_counter() - started) * 1000
            labels = [candidate.label_names[i] for i in probabilities.argmax(axis=1)]
            live = [answered.model.label_names[i] for i in answered.probabilities.argmax(axis=1)]
            self.meter.shadowed(candidate.tag, ms, labels, live, answered.ms)
            self._log(candidate, texts, probabilities, ms, shadow=True)
        except Exception:  # a candidate that fails is counted against it, never against a client
            self.meter.shadow_failed(candidate.tag)
        finally:
            self._shadow_slots.release()

    @bentoml.api
    async def classify(self, texts: Texts) -> list[Prediction]:
        """Label, score and class probabilities of each text, in the order given, and the tag
        of the model that answered."""
        started = time.perf_counter()
        texts = list(texts)
        try:
            try:
                answered = await self.batcher.submit(texts)
            except Overloaded as error:
                raise TooManyRequests(str(error)) from None
        except TooManyRequests:
            raise
        except Exception:
            self.meter.failed(self.live.tag)
            raise
        model, probabilities = answered.model, answered.probabilities
        latency_ms = (time.perf_counter() - started) * 1000
        self._log(model, texts, probabilities, latency_ms)
        labels = [model.label_names[i] for i in probabilities.argmax(axis=1)]
        self.meter.answered(model.tag, latency_ms, labels)
        self._shadow(texts, answered)
        results = []
        for row, label in zip(probabilities, labels, strict=True):
            results.append(
                Prediction(
                    label=label,
                    score=float(row.max()),
                    probabilities={
                        name: float(p) for name, p in zip(model.label_names, row, strict=True)
                    },
                    model=model.tag,
                )
            )
        return results

    @bentoml.api
    def model(self) -> ModelCard:
        """The served model's tag, lineage labels, serving variant (and why, on this machine),
        what was verified, its evaluation metrics, and the deployment's rollout state."""
        model = self.live
        return ModelCard(
            tag=model.tag,
            labels=dict(model.labels),
            label_names=model.label_names,
            variant=model.variant,
            variant_reason=model.why,
            variant_timings=model.timings,
            verified=model.verified,
            metrics=dict(model.metadata.get("metrics", {})),
            following=ROLLOUT is not None,
            rollout=read_state(ROLLOUT.folder) if ROLLOUT is not None else None,
        )


TextClassifier.add_asgi_middleware(BodySizeLimit, max_bytes=SETTINGS.max_body_bytes)
# after the size limit: it reads the body the limit has bounded
TextClassifier.add_asgi_middleware(
    JsonBodies, paths=[api.route for api in TextClassifier.apis.values()]
)
