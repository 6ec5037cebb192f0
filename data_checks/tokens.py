"""Tokens per text, as the base model's tokenizer counts them, a chunk of texts at a time.

Only the counts are kept: an encoding (ids, offsets, masks, words) costs about 9.5 KB per tweet,
so tokenizing a whole dataset in one call held gigabytes to learn one number per text."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

# Texts tokenized per call: large enough for the tokenizer's batch speed, small enough that one
# chunk of encodings is all a check ever holds.
CHUNK_TEXTS = 20_000

TokenCounter = Callable[[list[str]], Sequence[int]]


def token_lengths(
    texts: pl.Series, counter: TokenCounter, chunk_size: int = CHUNK_TEXTS
) -> np.ndarray:
    """`counter`'s count for every text, in order, as int32; `counter` sees at most
    `chunk_size` texts per call and its results are dropped once counted. A null text counts
    as the empty text."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    lengths = np.empty(texts.len(), dtype=np.int32)
    for start in range(0, texts.len(), chunk_size):
        chunk = texts.slice(start, chunk_size).fill_null("").to_list()
        counts = counter(chunk)
        if len(counts) != len(chunk):
            raise ValueError(f"the counter returned {len(counts)} counts for {len(chunk)} texts")
        lengths[start : start + len(chunk)] = counts
    return lengths


def tokenizer_counter(base_model: str) -> TokenCounter:
    """Tokens per text with the model's tokenizer: special tokens included, no truncation, no
    padding (the length training would truncate to max_length)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from assets.model.training.base_model import resolve_base_model

    hf_logging.set_verbosity_error()  # per-text "longer than max length" warnings are the point
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(base_model))
    if not tokenizer.is_fast:
        return lambda batch: [len(ids) for ids in tokenizer(batch, truncation=False)["input_ids"]]
    # The Rust tokenizer directly: a third faster than the Python wrapper, which converts every
    # encoding to lists first. It is this function's own copy, so its settings can be changed:
    # tokenizer.json may set a truncation (MiniLM's: 128) that would cap the counts.
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # tokenizers >= 0.21
    return lambda batch: [len(encoding) for encoding in encode(batch, add_special_tokens=True)]


def count_tokens(texts: pl.Series, base_model: str, chunk_size: int = CHUNK_TEXTS) -> np.ndarray:
    """Tokens per text with `base_model`'s tokenizer, `chunk_size` texts at a time."""
    return token_lengths(texts, tokenizer_counter(base_model), chunk_size)
