"""Length-sorted micro-batches with per-batch padding: the inference loop shared by the service
and the evaluation. Depends on torch only."""

from __future__ import annotations

import numpy as np
import torch


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices in micro-batches of similar length, longest first; callers restore the order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict_proba(
    model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32
) -> np.ndarray:
    """Class probabilities, shape (len(texts), num_labels), in the order of `texts`."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for batch in sorted_batches([len(x) for x in ids], batch_size):
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out
