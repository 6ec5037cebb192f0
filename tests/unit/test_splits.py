import polars as pl
import pytest

from assets.data.raw import stratified_sample
from assets.data.splits import TextSplitsConfig, assign_splits, build_splits


def raw(rows):
    return pl.DataFrame(rows, schema=["text", "label", "label_name", "source_split"], orient="row")


def test_normalises_drops_empty_and_duplicates_and_counts_them():
    frame = raw(
        [
            ("  cafe\u0301 ", 0, "a", "train"),  # NFD + spaces -> "café"
            ("café", 0, "a", "train"),  # duplicate once normalised
            ("   ", 1, "b", "train"),
            ("other", 1, "b", "train"),
            ("v", 0, "a", "validation"),
            ("t", 1, "b", "test"),
        ]
    )
    result = build_splits(frame, TextSplitsConfig())
    assert result.splits["train"]["text"].to_list() == ["café", "other"]
    assert result.drops["empty_train"] == 1
    assert result.drops["duplicates_train"] == 1


def test_text_in_two_splits_leaves_train_and_validation_never_test():
    frame = raw(
        [
            ("shared", 0, "a", "train"),
            ("keep", 1, "b", "train"),
            ("shared", 0, "a", "validation"),
            ("both", 1, "b", "validation"),
            ("shared", 0, "a", "test"),
            ("both", 1, "b", "test"),
            ("tv", 0, "a", "train"),
            ("tv", 0, "a", "validation"),
        ]
    )
    result = build_splits(frame, TextSplitsConfig())
    assert result.splits["test"]["text"].to_list() == ["shared", "both"]
    assert result.splits["validation"]["text"].to_list() == ["tv"]
    assert result.splits["train"]["text"].to_list() == ["keep"]
    assert result.drops["train_also_in_test"] == 1
    assert result.drops["validation_also_in_test"] == 2
    assert result.drops["train_also_in_validation"] == 1


def test_source_without_splits_gets_a_seeded_stratified_split():
    frame = raw([(f"text {i}", i % 2, "ab"[i % 2], None) for i in range(200)])
    config = TextSplitsConfig(validation_fraction=0.1, test_fraction=0.2, seed=7)
    first = build_splits(frame, config)
    again = build_splits(frame, config)
    sizes = {name: part.height for name, part in first.splits.items()}
    assert sizes == {"train": 140, "validation": 20, "test": 40}
    for name, part in first.splits.items():
        assert part.equals(again.splits[name])
        assert part["label"].mean() == pytest.approx(0.5)
    other = build_splits(frame, TextSplitsConfig(seed=8))
    assert not other.splits["test"].equals(first.splits["test"])


def test_fractions_must_leave_room_for_train():
    frame = raw([("a", 0, "a", None)])
    with pytest.raises(ValueError, match="must be below 1"):
        assign_splits(frame, 0.5, 0.5, 0)


def test_stratified_sample_keeps_class_shares_per_split():
    frame = raw([(f"t{i}", int(i % 4 == 0), "x", s) for s in ("train", "test") for i in range(100)])
    sample = stratified_sample(frame, 20, seed=1)
    counts = dict(
        sample.group_by("source_split", "label")
        .len()
        .select(pl.concat_str("source_split", "label", separator="/"), "len")
        .iter_rows()
    )
    assert counts == {"train/0": 15, "train/1": 5, "test/0": 15, "test/1": 5}
    assert stratified_sample(frame, 0, seed=1).equals(frame)
