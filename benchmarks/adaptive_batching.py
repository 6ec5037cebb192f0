"""BentoML's adaptive batching around the same model as the service: the batcher the service's
own (bento/batching.py) is measured against, side by side, by benchmarks/serving.py. The service
keeps one batcher; this one lives here.

    TEXTOPS_MODEL_TAG=<tag> TEXTOPS_VARIANT=onnx-int8 \
        bentoml serve benchmarks.adaptive_batching:AdaptiveBatching --port 3000

It answers /classify with the service's JSON: BentoML merges concurrent requests' texts (up to
TEXTOPS_MAX_BATCH_SIZE), runs each batch on one thread, and hands each request its own answers.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml

from textops_core.inference import label_names, load_predictor, serving_settings
from textops_core.runtime import physical_cores
from textops_core.settings import service_settings

# workers and threads as the service sets them
SETTINGS = service_settings()
WORKERS = SETTINGS.workers or physical_cores()
# how long a request may wait for its batch before BentoML cancels it (a 503)
MAX_LATENCY_MS = 10_000


@bentoml.service(
    name="textops-adaptive-batching",
    workers=WORKERS,
    traffic={"timeout": 30, "max_concurrency": 512},
    logging={"access": {"enabled": False}},
)
class AdaptiveBatching:
    def __init__(self) -> None:
        if not SETTINGS.model_tag:
            raise RuntimeError("set TEXTOPS_MODEL_TAG to the model to serve")
        model_dir = Path(bentoml.models.get(SETTINGS.model_tag).path)
        settings = serving_settings(model_dir)
        self.predictor = load_predictor(
            model_dir,
            int(settings.get("max_length", 128)),
            SETTINGS.variant or settings.get("variant", "pytorch"),
            threads=SETTINGS.threads or max(1, physical_cores() // WORKERS),
            micro_batch=SETTINGS.micro_batch,
        )
        self.names = label_names(model_dir)
        # batches run one at a time: the model uses the cores itself
        self.inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=MAX_LATENCY_MS,
    )
    async def classify(self, texts: list[str]) -> list[dict]:
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(
            self.inference, self.predictor.predict_proba, list(texts)
        )
        answers = []
        for row in probabilities.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            answers.append(
                {
                    "label": self.names[best],
                    "score": row[best],
                    "probabilities": dict(zip(self.names, row, strict=True)),
                }
            )
        return answers
