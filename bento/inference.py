"""Length-sorted micro-batches with per-batch padding: the inference loop shared by the service
and the evaluation. Depends on torch only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices in micro-batches of similar length, longest first; callers restore the order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest sequence of this batch (not to max_length), and the
    attention mask."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


@torch.inference_mode()
def predict_proba(
    model,
    tokenizer,
    texts: list[str],
    max_length: int,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Class probabilities, shape (len(texts), num_labels), in the order of `texts`;
    `on_batch(texts done so far)` after each micro-batch."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    done = 0
    for batch in sorted_batches([len(x) for x in ids], batch_size):
        input_ids, mask = pad_batch([ids[i] for i in batch], pad)
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        done += len(batch)
        if on_batch is not None:
            on_batch(done)
    return out
