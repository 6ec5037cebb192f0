"""The textops classifier as a BentoML service: the newest approved model, loaded once.

Settings (environment, read at start): TEXTOPS_MODEL_TAG pins a model tag; TEXTOPS_BATCHING=0
turns adaptive batching off; TEXTOPS_MAX_BATCH_SIZE / TEXTOPS_MAX_LATENCY_MS bound the adaptive
batches; TEXTOPS_MICRO_BATCH is the size of the length-sorted micro-batches run inside one;
TEXTOPS_SERVICE_THREADS is the request threads, TEXTOPS_TORCH_THREADS torch's intra-op threads;
TEXTOPS_SERVING_LOG is the prediction log's folder (`off` disables it) and
TEXTOPS_SERVING_LOG_TEXT=0 keeps texts out of it.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, Field, StringConstraints

from bento.registry import serving_tag
from bento.serving_log import LOG_TEXT_ENV, ServingLog, default_log_dir

with bentoml.importing():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bento.inference import predict_proba

MAX_TEXTS = 256
MAX_CHARS = 2000

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


def _docs_redirect():
    """`/docs` opens BentoML's OpenAPI page, which it serves at `/` (spec at `/docs.json`)."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    async def docs(request):
        return RedirectResponse(url="/")

    return Starlette(routes=[Route("/", docs)])


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Prediction(BaseModel):
    label: str = Field(description="The most probable class")
    score: float = Field(description="Its probability")
    probabilities: dict[str, float] = Field(description="Probability of every class")


class ModelCard(BaseModel):
    tag: str
    labels: dict[str, str] = Field(description="Lineage: approval, data version, run, code")
    label_names: list[str]
    metrics: dict[str, Any] = Field(description="The approving evaluation's numbers")


@bentoml.asgi_app(_docs_redirect(), path="/docs")
@bentoml.service(
    name="textops",
    workers=1,
    threads=_env_int("TEXTOPS_SERVICE_THREADS", 4),
    traffic={"timeout": 60, "max_concurrency": 256},
)
class TextClassifier:
    model_ref = bentoml.models.BentoModel(serving_tag())

    def __init__(self) -> None:
        torch.set_num_threads(_env_int("TEXTOPS_TORCH_THREADS", torch.get_num_threads()))
        stored = self.model_ref
        self.tag = str(stored.tag)
        self.info = stored.info
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = AutoModelForSequenceClassification.from_pretrained(stored.path)
        self.classifier.eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(stored.path)
        config = self.classifier.config
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.max_length = int(self.info.metadata.get("max_length", 128))
        self.micro_batch = _env_int("TEXTOPS_MICRO_BATCH", 32)
        log_dir = default_log_dir()
        self.serving_log = (
            ServingLog(log_dir, os.environ.get(LOG_TEXT_ENV, "1") != "0") if log_dir else None
        )

    @bentoml.api(
        batchable=os.environ.get("TEXTOPS_BATCHING", "1") != "0",
        max_batch_size=_env_int("TEXTOPS_MAX_BATCH_SIZE", 256),
        max_latency_ms=_env_int("TEXTOPS_MAX_LATENCY_MS", 1000),
    )
    def classify(self, texts: Texts) -> list[Prediction]:
        """Label, score and class probabilities of each text, in the order given."""
        started = time.perf_counter()
        probabilities = predict_proba(
            self.classifier, self.tokenizer, texts, self.max_length, self.micro_batch
        )
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
        if self.serving_log is not None:
            self.serving_log.append(
                self.tag,
                texts,
                [r.label for r in results],
                [r.probabilities for r in results],
                (time.perf_counter() - started) * 1000,
            )
        return results

    @bentoml.api
    def model(self) -> ModelCard:
        """The served model's tag, lineage labels and evaluation metrics."""
        return ModelCard(
            tag=self.tag,
            labels=dict(self.info.labels),
            label_names=self.label_names,
            metrics=dict(self.info.metadata.get("metrics", {})),
        )
