"""raw_texts and text_splits materialized with their checks, on small real-format data."""

import csv
import logging
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.data.raw import raw_texts
from assets.data.splits import text_splits
from assets.interfaces.manifests import RawTextsManifest, TextSplitsManifest
from data_checks.asset_checks import raw_texts_checks, text_splits_checks
from orchestration.definitions import pipeline_resources
from tests.conftest import latest_manifest, write_tweeteval

DATA_ASSETS = [raw_texts, text_splits, raw_texts_checks, text_splits_checks]


def materialize_data(
    store, source: Path | str, instance=None, **raw_config
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        DATA_ASSETS,
        resources=pipeline_resources(store),
        run_config={"ops": {"raw_texts": {"config": {"source": str(source), **raw_config}}}},
        raise_on_error=False,
        instance=instance,
    )


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step's error with its causes, as the run's logs show them."""
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return "\n".join(messages)


def checks(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {
        e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()
    }


def test_tweeteval_folder_end_to_end(store, tweeteval_dir):
    result = materialize_data(store, tweeteval_dir)
    assert result.success
    assert materialized(result) == {"raw_texts", "text_splits"}
    assert all(passed for passed, _ in checks(result).values()), checks(result)
    assert len(checks(result)) == 9
    meta = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert meta["rows"].value == 64
    assert meta["rows_per_split"].value == {"train": 40, "validation": 12, "test": 12}
    manifest = result.output_for_node("text_splits")
    train = store.read_parquet(manifest.paths["train"])
    assert train.columns == ["text", "label", "label_name"] and train.height == 40


def test_data_version_is_the_content_hash_and_stable(store, tweeteval_dir):
    first = materialize_data(store, tweeteval_dir)
    again = materialize_data(store, tweeteval_dir)

    def version(result, asset):
        return result.asset_materializations_for_node(asset)[0].tags["dagster/data_version"]

    raw_meta = first.asset_materializations_for_node("raw_texts")[0].metadata
    assert version(first, "raw_texts") == raw_meta["content_hash"].value
    assert version(first, "raw_texts") == version(again, "raw_texts")
    assert version(first, "text_splits") == version(again, "text_splits")
    (tweeteval_dir / "train_text.txt").write_text(
        (tweeteval_dir / "train_text.txt").read_text().replace("tweet 0:", "tweet zero:")
    )
    changed = materialize_data(store, tweeteval_dir)
    assert version(changed, "raw_texts") != version(first, "raw_texts")


def test_csv_without_splits_is_split_stratified(store, tmp_path):
    rows = [f"message {i} {'good' if i % 3 else 'bad'}" for i in range(300)]
    frame = pl.DataFrame({"text": rows, "label": ["ham" if i % 3 else "spam" for i in range(300)]})
    frame.write_csv(tmp_path / "data.csv")
    result = materialize_data(store, tmp_path / "data.csv")
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("text_splits")[0].metadata
    assert (meta["train_rows"].value, meta["validation_rows"].value, meta["test_rows"].value) == (
        210,
        30,
        60,
    )
    assert meta["class_balance"].value["test"] == {"ham": 0.6667, "spam": 0.3333}


def test_max_rows_per_split_makes_quick_runs(store, tweeteval_dir):
    result = materialize_data(store, tweeteval_dir, max_rows_per_split=10)
    assert result.success
    meta = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert meta["rows_per_split"].value == {"train": 10, "validation": 10, "test": 10}


def corrupt(folder: Path, case: str) -> None:
    if case == "misaligned labels":
        lines = (folder / "train_labels.txt").read_text().splitlines()
        (folder / "train_labels.txt").write_text("\n".join(lines[1:]) + "\n")
    elif case == "label not in mapping":
        (folder / "val_labels.txt").write_text("0\n2\n" + "1\n" * 10)
    elif case == "empty file":
        (folder / "test_text.txt").write_bytes(b"")
    elif case == "not utf-8":
        (folder / "val_text.txt").write_bytes(b"\xff\xfe bad\n" * 12)
    elif case == "missing split file":
        (folder / "val_labels.txt").unlink()


def saved(instance, store) -> tuple[RawTextsManifest, TextSplitsManifest]:
    """The latest raw_texts and text_splits, as a later run would read them."""
    return (
        latest_manifest(instance, store, "raw_texts", RawTextsManifest),
        latest_manifest(instance, store, "text_splits", TextSplitsManifest),
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("misaligned labels", "train_text.txt has 40 lines but train_labels.txt has 39"),
        ("label not in mapping", "val_labels.txt line 2: label 2 is not in mapping.txt"),
        ("empty file", "test_text.txt: empty file"),
        ("not utf-8", "val_text.txt: not UTF-8 text"),
        ("missing split file", "missing split file(s) val_labels.txt"),
    ],
)
def test_bad_tweeteval_input_fails_and_keeps_what_was_saved(
    store, instance, tmp_path, case, message
):
    good = write_tweeteval(tmp_path / "good")
    assert materialize_data(store, good, instance).success
    before = saved(instance, store)
    bad = write_tweeteval(tmp_path / "bad")
    corrupt(bad, case)
    result = materialize_data(store, bad, instance)
    assert not result.success
    assert message in failure_message(result)
    assert materialized(result) == set()
    assert saved(instance, store) == before


def test_csv_without_text_column_fails(store, tmp_path):
    (tmp_path / "data.csv").write_text("body,label\nhello,0\n")
    result = materialize_data(store, tmp_path / "data.csv")
    assert not result.success
    assert "no 'text' column" in failure_message(result)
    assert materialized(result) == set()


def test_too_many_empty_texts_stop_the_run_at_a_blocking_check(store, tmp_path):
    texts = ["" if i % 10 == 0 else f"text {i}" for i in range(200)]
    pl.DataFrame({"text": texts, "label": [i % 2 for i in range(200)]}).write_csv(
        tmp_path / "data.csv"
    )
    result = materialize_data(store, tmp_path / "data.csv")
    assert not result.success
    assert checks(result)["empty_text_share"] == (False, "ERROR")
    assert materialized(result) == {"raw_texts"}  # text_splits never ran


def test_same_tweet_in_train_and_test_is_removed_from_train(store, tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    test_first = (folder / "test_text.txt").read_text().splitlines()[0]
    test_label = (folder / "test_labels.txt").read_text().splitlines()[0]
    with (folder / "train_text.txt").open("a") as handle:
        handle.write(f"  {test_first}\n")  # differs only by whitespace, equal once normalised
    with (folder / "train_labels.txt").open("a") as handle:
        handle.write(f"{1 - int(test_label)}\n")  # and carries the other label
    result = materialize_data(store, folder)
    assert result.success
    meta = result.asset_materializations_for_node("text_splits")[0].metadata
    assert meta["dropped_train_also_in_test"].value == 1
    manifest = result.output_for_node("text_splits")
    splits = {n: store.read_parquet(p) for n, p in manifest.paths.items()}
    assert test_first not in splits["train"]["text"].to_list()
    test_row = splits["test"].filter(pl.col("text") == test_first)
    assert test_row["label"].to_list() == [int(test_label)]
    assert checks(result)["no_text_in_two_splits"] == (True, "ERROR")


def test_a_landed_near_copy_of_a_test_text_never_reaches_train_or_validation(
    store, tweeteval_dir, tmp_path
):
    """Whoever writes the landing folder cannot train on the benchmark by disguising its texts:
    a test text upper-cased with a zero-width space inside is dropped as the exact copy is."""
    test_text = (tweeteval_dir / "test_text.txt").read_text().splitlines()[0]
    disguised = test_text.upper()
    disguised = f"{disguised[:3]}\u200b{disguised[3:]}"
    landing = tmp_path / "landing"
    landing.mkdir()
    pl.DataFrame(
        {"text": [disguised, f"\ufeff{test_text}  "], "label": [0, 1], "split": ["train", "val"]}
    ).write_csv(landing / "batch.csv")
    result = materialize_data(store, tweeteval_dir, landing=str(landing))
    assert result.success, failure_message(result)
    raw_meta = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert raw_meta["landed_files"].value[0]["rows"] == 2
    manifest = result.output_for_node("text_splits")
    splits = {name: store.read_parquet(path) for name, path in manifest.paths.items()}
    assert splits["train"].height == 40 and splits["validation"].height == 12
    assert disguised not in splits["train"]["text"].to_list()
    meta = result.asset_materializations_for_node("text_splits")[0].metadata
    assert meta["dropped_train_also_in_test"].value == 1
    assert meta["dropped_validation_also_in_test"].value == 1
    assert checks(result)["no_text_in_two_splits"] == (True, "ERROR")


def test_real_tweeteval_hate(store, shared_tweeteval):
    result = materialize_data(store, shared_tweeteval / "hate")
    assert result.success, failure_message(result)
    assert all(passed for passed, _ in checks(result).values()), checks(result)
    raw_meta = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert raw_meta["rows_per_split"].value == {"train": 9000, "validation": 1000, "test": 2970}
    assert raw_meta["rows_per_class"].value == {"hate": 5462, "not-hate": 7508}
    split_meta = result.asset_materializations_for_node("text_splits")[0].metadata
    assert split_meta["dropped_empty_train"].value == 7  # the train file's blank lines
    assert split_meta["dropped_empty_validation"].value == 1
    # 232 exact copies of test tweets, and 3 that differ from one only in their spaces
    assert split_meta["dropped_train_also_in_test"].value == 235
    assert split_meta["test_rows"].value == 2966  # only its 4 in-split duplicates and no blank
    assert (split_meta["train_rows"].value, split_meta["validation_rows"].value) == (8749, 999)


def test_a_csv_export_at_volume_passes_raw_splits_and_checks(store, tmp_path):
    """60,000 rows: TweetEval hate's training tweets repeated, each copy after the first
    suffixed with its number, written as a plain export writes them (the first copy's 7 empty
    tweets as unquoted empty cells): through every step, every check passing."""
    from assets.data.sources.transports import DEFAULT_SOURCE, read_source

    source = read_source(DEFAULT_SOURCE, tmp_path / "cache", lambda message: None)
    train = source.frame.filter(pl.col("source_split") == "train")
    rows = 60_000
    with (tmp_path / "tweets.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(rows):
            text, label = train.row(i % train.height)[:2]
            copy = i // train.height
            writer.writerow([f"{text} {copy}" if copy else text, label])
    result = materialize_data(store, tmp_path / "tweets.csv")
    assert result.success, failure_message(result)
    assert all(passed for passed, _ in checks(result).values()), checks(result)
    empty = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "empty_text_share"
    )
    assert empty.metadata["unexpected_count"].value == 7
    meta = result.asset_materializations_for_node("text_splits")[0].metadata
    assert meta["dropped_empty_unsplit"].value == 7
    kept = meta["train_rows"].value + meta["validation_rows"].value + meta["test_rows"].value
    assert kept == rows - 7 - meta["dropped_duplicates_unsplit"].value
    assert meta["test_rows"].value == pytest.approx(0.2 * kept, abs=2)


def test_a_landed_file_over_the_cap_is_left_out_and_the_others_are_read(
    store, tweeteval_dir, tmp_path, monkeypatch
):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "big.csv").write_text("text,label\n" + "big news,positive\n" * 20)
    (landing / "small.csv").write_text("text,label\nsmall news,negative\n")
    monkeypatch.setenv("TEXTOPS_LANDING_MAX_BYTES", "100")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_data(store, tweeteval_dir, instance, landing=str(landing))
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert [file["file"] for file in meta["landed_files"].value] == ["small.csv"]
    big = (landing / "big.csv").stat().st_size
    assert meta["refused_landed_files"].value == [{"file": "big.csv", "bytes": big}]
    assert meta["rows"].value == 64 + 1
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING
    ]
    assert f"big.csv: {big:,} bytes, more than the cap of 100 bytes on a landed file" in "".join(
        warnings
    )


def test_a_dropped_connection_is_retried_and_a_bad_source_fails_at_once(
    store, tweeteval_dir, tmp_path, monkeypatch
):
    import assets.data.raw as raw_module

    original, calls, dropped = raw_module.read_source, [], []

    def dropping_once(*args, **kwargs):
        calls.append(args[0])
        if not dropped:
            dropped.append(args[0])
            raise ConnectionError("the connection closed after 0 of 4,096 bytes")
        return original(*args, **kwargs)

    monkeypatch.setattr(raw_module, "read_source", dropping_once)
    result = materialize_data(store, tweeteval_dir)
    assert result.success and len(calls) == 2  # Dagster's retry policy read it again
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["raw_texts"]

    calls.clear()
    (tmp_path / "data.csv").write_text("body,label\nhello,0\n")
    result = materialize_data(store, tmp_path / "data.csv")
    assert not result.success and len(calls) == 1  # no retry can fix the input
    assert "SourceError" in failure_message(result) and "no 'text' column" in failure_message(
        result
    )
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
