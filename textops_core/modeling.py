"""The classifier textops trains and serves, for the PyTorch path (training, export, the
pytorch variant): a transformers sequence classifier, optionally reading the mean of the last
hidden states instead of the [CLS] pooler. Needs torch and transformers."""

from __future__ import annotations

import types
from pathlib import Path

POOLING_KEY = "textops_pooling"  # in config.json: "cls" (the model's own head) or "mean"


def load_sequence_classifier(model_dir: Path, **options):
    """AutoModelForSequenceClassification with the pooling it was trained with."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **options)
    if getattr(model.config, POOLING_KEY, "cls") == "mean":
        use_mean_pooling(model)
    return model


def use_mean_pooling(model) -> None:
    """Classify from the mean of the last hidden states over the real tokens (what a
    sentence-transformers encoder was trained to produce) rather than the [CLS] pooler. The
    weights keep AutoModelForSequenceClassification's layout, so save_pretrained and
    from_pretrained work as usual; config.json records the pooling."""
    from torch import nn

    head = getattr(model, "classifier", None)
    if not (isinstance(head, nn.Linear) and hasattr(model, "dropout")):
        raise ValueError(
            f"mean pooling needs a model whose head is one linear layer on the pooled vector "
            f"(BERT-style); {type(model).__name__} has another head: use pooling 'cls'"
        )
    setattr(model.config, POOLING_KEY, "mean")
    model.forward = types.MethodType(_mean_pooled_forward, model)


def mean_pooled(model, input_ids, attention_mask):
    """The mean of the encoder's last hidden states over the real tokens: the sentence
    embedding a sentence-transformers encoder gives (and the drift report compares)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-6)


def _mean_pooled_forward(self, input_ids=None, attention_mask=None, **kwargs):
    from transformers.modeling_outputs import SequenceClassifierOutput

    pooled = mean_pooled(self, input_ids, attention_mask)
    return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))
