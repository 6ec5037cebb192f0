import csv
import io
from pathlib import Path

import polars as pl
import pytest

from data_checks.gx_suite import judged_columns
from data_checks.outcome import Severity
from data_checks.raw import raw_texts_outcomes, schema_sample
from data_checks.splits import stack_splits, text_splits_outcomes

LABELS = ["pos", "neg"]


def raw_frame(texts, labels=None, splits=None):
    labels = labels or [i % 2 for i in range(len(texts))]
    return pl.DataFrame(
        {
            "text": texts,
            "label": labels,
            "label_name": [LABELS[i] if 0 <= i < 2 else "?" for i in labels],
            "source_split": splits or ["train"] * len(texts),
        },
        schema={
            "text": pl.String,
            "label": pl.Int64,
            "label_name": pl.String,
            "source_split": pl.String,
        },
    )


GOOD = [f"tweet number {i}" for i in range(2000)]


def test_raw_checks_pass_on_good_data():
    outcomes = raw_texts_outcomes(raw_frame(GOOD), LABELS)
    assert {n: o.passed for n, o in outcomes.items()} == dict.fromkeys(outcomes, True)


def test_raw_schema_fails_on_wrong_type_and_missing_column():
    frame = raw_frame(GOOD).with_columns(pl.col("label").cast(pl.String))
    outcome = raw_texts_outcomes(frame, LABELS)["schema"]
    assert not outcome.passed and outcome.severity is Severity.ERROR
    assert "label" in outcome.metadata["failed"]
    missing = raw_texts_outcomes(raw_frame(GOOD).drop("label_name"), LABELS)
    assert not missing["schema"].passed
    assert not missing["labels_in_label_set"].passed  # dependent checks fail, never pass blind


def test_labels_outside_the_label_set_with_examples():
    labels = [0] * 1990 + [5] * 10
    outcome = raw_texts_outcomes(raw_frame(GOOD, labels), LABELS)["labels_in_label_set"]
    assert not outcome.passed
    assert outcome.metadata["unexpected_count"] == 10
    assert len(outcome.metadata["examples"]) == 5
    assert outcome.metadata["examples"][0]["label"] == 5


def test_null_text():
    texts = [*GOOD[:-1], None]
    outcome = raw_texts_outcomes(raw_frame(texts), LABELS)["text_not_null"]
    assert not outcome.passed and outcome.metadata["unexpected_count"] == 1


@pytest.mark.parametrize(
    ("n_empty", "passed", "severity"),
    [
        (2, True, Severity.WARN),  # 0.1 %: not above the warning threshold
        (3, False, Severity.WARN),  # 0.15 %
        (100, False, Severity.WARN),  # 5 %: not above the error threshold
        (101, False, Severity.ERROR),
    ],
)
def test_empty_text_share_thresholds(n_empty, passed, severity):
    texts = [" " if i < n_empty else t for i, t in enumerate(GOOD)]
    outcome = raw_texts_outcomes(raw_frame(texts), LABELS)["empty_text_share"]
    assert (outcome.passed, outcome.severity) == (passed, severity)
    assert outcome.metadata["unexpected_count"] == n_empty


def splits_of(n=20, **overrides):
    def part(prefix):
        return pl.DataFrame(
            {
                "text": [f"{prefix} {i}" for i in range(n)],
                "label": [i % 2 for i in range(n)],
                "label_name": [LABELS[i % 2] for i in range(n)],
            }
        )

    splits = {name: part(name) for name in ("train", "validation", "test")}
    return splits | overrides


def run_split_checks(splits, **kwargs):
    lengths = stack_splits(splits)["text"].str.len_chars().cast(pl.Int64)
    return text_splits_outcomes(splits, LABELS, lengths, **kwargs)


def test_split_checks_pass_on_good_splits():
    outcomes = run_split_checks(splits_of())
    assert all(o.passed for o in outcomes.values()), outcomes


def test_text_in_two_splits_fails_with_the_text_as_example():
    splits = splits_of()
    leaked = pl.concat([splits["train"], splits["test"].head(1)])
    outcome = run_split_checks(splits | {"train": leaked})["no_text_in_two_splits"]
    assert not outcome.passed and outcome.severity is Severity.ERROR
    assert outcome.metadata["unexpected_count"] == 2  # both rows of the pair
    assert {e["text"] for e in outcome.metadata["examples"]} == {"test 0"}


def test_missing_class_in_a_split():
    splits = splits_of()
    only_pos = splits["validation"].filter(pl.col("label") == 0)
    outcome = run_split_checks(splits | {"validation": only_pos})["classes_in_every_split"]
    assert not outcome.passed
    assert outcome.metadata["rows_per_split_and_class"]["validation/neg"] == 0
    assert outcome.metadata["examples"] == [{"split": "validation", "label_name": "neg", "rows": 0}]
    few = run_split_checks(splits_of(n=6), min_per_class=4)["classes_in_every_split"]
    assert not few.passed and few.metadata["unexpected_count"] == 6


def test_empty_text_in_a_split():
    splits = splits_of()
    test = splits["test"].with_columns(
        text=pl.when(pl.col("label") == 1).then(pl.lit("")).otherwise(pl.col("text"))
    )
    outcome = run_split_checks(splits | {"test": test})["no_empty_text"]
    assert not outcome.passed and outcome.metadata["unexpected_count"] == 10


def test_class_share_shift_warns():
    splits = splits_of()
    skewed = pl.concat(
        [
            splits["test"],
            splits["test"].filter(pl.col("label") == 0).with_columns(pl.col("text") + " again"),
        ]
    )
    outcome = run_split_checks(splits | {"test": skewed})["class_share_shift"]
    assert not outcome.passed and outcome.severity is Severity.WARN
    assert outcome.metadata["max_abs_shift"] == pytest.approx(2 / 3 - 1 / 2)


def test_long_text_share_reports_the_figure():
    outcome = run_split_checks(splits_of(), max_length=7)["long_text_share"]
    # "train 10".."train 19" and "validation *" are longer than 7 characters
    assert not outcome.passed and outcome.severity is Severity.WARN
    assert outcome.metadata["share"] == pytest.approx(30 / 60)
    assert "50.00%" in outcome.description


def test_schema_judges_a_null_far_down_a_column_as_the_whole_frame():
    frame = raw_frame(GOOD).with_columns(
        label=pl.when(pl.int_range(pl.len()) == 1500).then(None).otherwise(pl.col("label"))
    )
    assert schema_sample(frame).height == 1001  # the first rows and the column's first null
    outcome = raw_texts_outcomes(frame, LABELS)["schema"]
    assert not outcome.passed and "label" in outcome.metadata["failed"]  # a float in pandas


def test_gx_is_given_only_the_columns_its_expectations_read():
    import great_expectations.expectations as gxe

    frame = raw_frame(GOOD)
    by_column = [gxe.ExpectColumnValuesToNotBeNull(column="label")]
    assert judged_columns(frame, by_column) == ["label"]
    table = [*by_column, gxe.ExpectTableColumnsToMatchSet(column_set=frame.columns)]
    assert judged_columns(frame, table) == frame.columns


def tweeteval_hate_train(tmp_path: Path) -> pl.DataFrame:
    from assets.data.sources.transports import DEFAULT_SOURCE, read_source

    source = read_source(DEFAULT_SOURCE, tmp_path / "cache", lambda message: None)
    return source.frame.filter(pl.col("source_split") == "train")


def test_a_plain_csv_export_counts_empty_texts_as_the_tweeteval_folder_does(tmp_path):
    from assets.data.sources.formats import read_table

    train = tweeteval_hate_train(tmp_path)
    assert (train["text"] == "").sum() == 7
    # Python's csv module, like most exporters, writes an empty text as an unquoted empty cell
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(train.select("text", "label").iter_rows())
    assert sum(line.startswith(",") for line in buffer.getvalue().split("\n")) == 7
    exported = read_table(buffer.getvalue().encode(), "hate_train.csv").frame

    def verdicts(frame):
        outcomes = raw_texts_outcomes(frame, ["not-hate", "hate"])
        return {
            name: (o.passed, o.severity, o.metadata.get("unexpected_count"))
            for name, o in outcomes.items()
        }

    assert verdicts(exported) == verdicts(train)
    assert verdicts(exported)["text_not_null"] == (True, Severity.ERROR, 0)
    assert verdicts(exported)["empty_text_share"] == (True, Severity.WARN, 7)
