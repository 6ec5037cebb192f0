import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.data.raw import stratified_sample
from assets.data.splits import TextSplitsConfig, assign_splits, build_splits, match_keys


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


TEST_TEXT = "@user Straße closed again, what a day"
NEAR_COPIES = [
    "@US\u200bER STRASSE CLOSED AGAIN, WHAT A DAY",  # upper case, zero-width space
    "\ufeff@user  Straße\u2060 closed\u200c again,\u200d what a day",  # BOM, joiners, 2 spaces
    "＠ｕｓｅｒ Straße clo\u00adsed again, what a day\ufe0f",  # fullwidth, soft hyphen, VS16
    "@user\tstraße closed again,\n what a day",  # other whitespace
]


def test_near_copies_of_a_test_text_leave_train_and_validation():
    rows = [(TEST_TEXT, 0, "a", "test"), ("other", 1, "b", "test")]
    rows += [(text, 1, "b", "train") for text in NEAR_COPIES[:3]]
    rows += [(NEAR_COPIES[3], 1, "b", "validation"), ("kept", 0, "a", "train")]
    result = build_splits(raw(rows), TextSplitsConfig())
    assert result.splits["train"]["text"].to_list() == ["kept"]
    assert result.splits["validation"].height == 0
    assert result.splits["test"]["text"].to_list() == [TEST_TEXT, "other"]  # as written
    assert result.drops["train_also_in_test"] == 3
    assert result.drops["validation_also_in_test"] == 1


def test_texts_are_kept_as_written_and_a_split_keeps_its_own_case_variants():
    rows = [("Hello there", 0, "a", "train"), ("HELLO there", 1, "b", "train")]
    rows += [("\u200bv", 0, "a", "validation"), ("t", 1, "b", "test")]
    result = build_splits(raw(rows), TextSplitsConfig())
    assert result.splits["train"]["text"].to_list() == ["Hello there", "HELLO there"]
    assert result.splits["validation"]["text"].to_list() == ["\u200bv"]


INVISIBLES = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u034f\ufe0f\u180e\u202a\u2064"


@st.composite
def disguised(draw) -> tuple[str, str]:
    """A text and a copy of it with its case changed, invisible characters inserted and its
    spaces doubled or made tabs and newlines."""
    text = draw(st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"])))
    copy = []
    for character in text:
        # its case variants that case folding takes back to it (the dotless ı upper-cases to
        # I, which folds to i: another letter)
        cases = [character, character.upper(), character.lower()]
        character = draw(
            st.sampled_from([c for c in cases if c.casefold() == character.casefold()])
        )
        if character == " ":
            character = draw(st.sampled_from([" ", "  ", "\t", "\n "]))
        copy.append(character + draw(st.text(st.sampled_from(INVISIBLES), max_size=2)))
    return text, "".join(copy)


@settings(max_examples=300, deadline=None)
@given(disguised())
def test_a_disguised_copy_has_the_key_of_its_text(case):
    text, copy = case
    keys = match_keys(pl.Series([text, copy]))
    assert keys[0] == keys[1], (text, copy)


def test_the_split_check_fails_on_a_near_copy_in_two_splits():
    from data_checks.splits import stack_splits, text_splits_outcomes

    def part(texts: list[str]) -> pl.DataFrame:
        labels = [i % 2 for i in range(len(texts))]
        return pl.DataFrame(
            {"text": texts, "label": labels, "label_name": ["a", "b"] * (len(texts) // 2)}
        )

    splits = {
        "train": part([f"train {i}" for i in range(9)] + [NEAR_COPIES[0]]),
        "validation": part([f"validation {i}" for i in range(10)]),
        "test": part([f"test {i}" for i in range(9)] + [TEST_TEXT]),
    }
    lengths = stack_splits(splits)["text"].str.len_chars()
    outcome = text_splits_outcomes(splits, ["a", "b"], lengths)["no_text_in_two_splits"]
    assert not outcome.passed and outcome.metadata["unexpected_count"] == 2
    assert {e["text"] for e in outcome.metadata["examples"]} == {NEAR_COPIES[0], TEST_TEXT}
