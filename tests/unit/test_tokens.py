"""Token counts for the long_text_share check: a chunk of texts at a time, counts only."""

import numpy as np
import polars as pl
import pytest

from assets.data.sources.transports import DEFAULT_SOURCE, read_source
from assets.model.training.base_model import DEFAULT_BASE_MODEL, resolve_base_model
from data_checks.tokens import count_tokens, token_lengths


class RecordingCounter:
    """Counts words, and records the largest batch it was given and what it returned."""

    def __init__(self) -> None:
        self.largest_batch = 0
        self.calls = 0

    def __call__(self, batch: list[str]) -> list[int]:
        self.largest_batch = max(self.largest_batch, len(batch))
        self.calls += 1
        return [len(text.split()) for text in batch]


TEXTS = pl.Series([f"word {'x ' * (i % 9)}{i}" for i in range(103)] + [None, ""])


def test_chunks_count_what_one_call_counts_and_hold_one_chunk_at_a_time():
    whole = RecordingCounter()
    expected = token_lengths(TEXTS, whole, chunk_size=TEXTS.len())
    assert whole.calls == 1
    chunked = RecordingCounter()
    lengths = token_lengths(TEXTS, chunked, chunk_size=10)
    assert chunked.largest_batch == 10 and chunked.calls == 11
    assert lengths.dtype == np.int32 and lengths.tolist() == expected.tolist()
    assert lengths[-2:].tolist() == [0, 0]  # a null text counts as the empty text


def test_chunk_size_must_be_positive_and_counts_must_match_texts():
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        token_lengths(TEXTS, RecordingCounter(), chunk_size=0)
    with pytest.raises(ValueError, match="returned 1 counts for 10 texts"):
        token_lengths(TEXTS, lambda batch: [1], chunk_size=10)


def test_the_model_tokenizer_counts_in_chunks_as_in_one_untruncated_call(tmp_path):
    from transformers import AutoTokenizer

    tweets = read_source(DEFAULT_SOURCE, tmp_path, lambda message: None).frame["text"].head(300)
    texts = pl.concat([tweets, pl.Series(["word " * 400])])  # longer than any max_length
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(DEFAULT_BASE_MODEL))
    expected = [len(ids) for ids in tokenizer(texts.to_list(), truncation=False)["input_ids"]]
    lengths = count_tokens(texts, DEFAULT_BASE_MODEL, chunk_size=64)
    assert lengths.tolist() == expected
    assert lengths[-1] == 402  # special tokens counted, nothing truncated
