"""The baseline textops is measured against: a FastAPI app as teams write it by hand, one PyTorch
forward per request, the same JSON in and out as the service's /classify.

    TEXTOPS_BASELINE_MODEL=<model folder> uvicorn benchmarks.fastapi_baseline:app --port 3100
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MODEL_DIR = os.environ["TEXTOPS_BASELINE_MODEL"]
model = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR).eval()
tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
names = [model.config.id2label[i] for i in range(model.config.num_labels)]
app = FastAPI()


class Request(BaseModel):
    texts: list[str]


@app.post("/classify")
def classify(request: Request) -> list[dict]:
    encoded = tokenizer(
        request.texts, padding=True, truncation=True, max_length=128, return_tensors="pt"
    )
    with torch.inference_mode():
        probabilities = torch.softmax(model(**encoded).logits, dim=-1)
    results = []
    for row in probabilities.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        results.append(
            {
                "label": names[best],
                "score": row[best],
                "probabilities": dict(zip(names, row, strict=True)),
            }
        )
    return results
