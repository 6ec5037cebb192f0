import http.server
import io
import json
import threading
import time
from functools import partial
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.data.sources.formats import RAW_SCHEMA, SourceError, read_table
from assets.data.sources.transports import fetch, read_source
from tests.conftest import write_tweeteval


def read(uri, tmp_path: Path):
    return read_source(str(uri), tmp_path / "cache", lambda message: None)


def test_tweeteval_folder_keeps_splits_and_mapping(tweeteval_dir, tmp_path):
    source = read(tweeteval_dir, tmp_path)
    assert source.label_names == ["positive", "negative"]
    assert source.frame.columns == ["text", "label", "label_name", "source_split"]
    counts = dict(source.frame.group_by("source_split").len().iter_rows())
    assert counts == {"train": 40, "validation": 12, "test": 12}
    first = source.frame.row(1, named=True)
    assert first["label"] == 1 and first["label_name"] == "negative"


def test_blank_lines_are_rows_and_unicode_line_separators_stay_inside_a_text(tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    (folder / "train_text.txt").write_text("a\u2028b\n\n" + "x\n" * 38)
    source = read(folder, tmp_path)
    train = source.frame.filter(pl.col("source_split") == "train")
    assert train.height == 40
    assert train["text"][0] == "a\u2028b" and train["text"][1] == ""


def test_misaligned_label_file_names_both_files(tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    lines = (folder / "train_labels.txt").read_text().splitlines()
    (folder / "train_labels.txt").write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(
        SourceError, match=r"train_text.txt has 40 lines but train_labels.txt has 37"
    ):
        read(folder, tmp_path)


def test_label_not_in_mapping(tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    (folder / "test_labels.txt").write_text("0\n7\n" + "1\n" * 10)
    with pytest.raises(SourceError, match=r"test_labels.txt line 2: label 7 is not in mapping.txt"):
        read(folder, tmp_path)


def test_empty_file(tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    (folder / "val_text.txt").write_text("")
    with pytest.raises(SourceError, match=r"val_text.txt: empty file"):
        read(folder, tmp_path)


def test_bytes_that_are_not_utf8(tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    (folder / "train_text.txt").write_bytes(b"fine\ncaf\xe9 latin-1\n" + b"x\n" * 38)
    with pytest.raises(SourceError, match=r"train_text.txt: not UTF-8 text .* on line 2"):
        read(folder, tmp_path)


def test_missing_split_file(tmp_path):
    folder = write_tweeteval(tmp_path / "d")
    (folder / "test_labels.txt").unlink()
    with pytest.raises(SourceError, match=r"missing split file\(s\) test_labels.txt"):
        read(folder, tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        read(tmp_path / "nowhere", tmp_path)


def test_csv_without_text_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("tweet,label\nhello,0\n")
    with pytest.raises(SourceError, match=r"data.csv: no 'text' column \(found: tweet, label\)"):
        read(path, tmp_path)


def test_csv_with_label_names_and_no_split(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"hello, world",spam\nhi,ham\nbuy now,spam\n')
    source = read(path, tmp_path)
    assert source.label_names == ["ham", "spam"]
    assert source.frame["label"].to_list() == [1, 0, 1]
    assert source.frame["source_split"].null_count() == 3


def test_jsonl_with_ids_and_split_column(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "a", "label": 0, "split": "train"}\n{"text": "b", "label": 1, "split": "val"}\n'
    )
    source = read(path, tmp_path)
    assert source.label_names == ["0", "1"]
    assert source.frame["source_split"].to_list() == ["train", "validation"]


def test_parquet_and_unknown_split_name(tmp_path):
    path = tmp_path / "data.parquet"
    pl.DataFrame(
        {"text": ["a", "b"], "label": [0, 1], "split": ["train", "holdout"]}
    ).write_parquet(path)
    with pytest.raises(SourceError, match=r"unknown split name\(s\) \['holdout'\]"):
        read(path, tmp_path)


def test_unsupported_suffix_and_scheme(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(SourceError, match="unsupported file type"):
        read(path, tmp_path)
    with pytest.raises(SourceError, match="unsupported URI scheme"):
        read("ftp://example.org/x.csv", tmp_path)


@pytest.fixture
def http_folder(tmp_path):
    root = tmp_path / "served"
    write_tweeteval(root / "hate")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


def test_url_of_a_tweeteval_folder_is_downloaded_and_cached(http_folder, tmp_path):
    root, base, server = http_folder
    logs = []
    source = read_source(f"{base}/hate", tmp_path / "cache", logs.append)
    assert source.frame.height == 64
    assert any(line.startswith("downloading http") and " done: " in line for line in logs)
    index = json.loads((tmp_path / "cache" / "downloads" / "index.json").read_text())
    assert len(index) == 7  # val and test labels share a blob: the cache is by content
    assert len(list((tmp_path / "cache" / "downloads" / "blobs").iterdir())) == 6
    server.shutdown()
    server.server_close()
    offline = []
    again = read_source(f"{base}/hate", tmp_path / "cache", offline.append)
    assert again.frame.equals(source.frame)
    assert any("using the cached copy" in line for line in offline)


def test_url_of_a_csv_file(http_folder, tmp_path):
    root, base, _ = http_folder
    (root / "data.csv").write_text("text,label\nhello,0\nbye,1\n")
    source = read_source(f"{base}/data.csv", tmp_path / "cache", lambda m: None)
    assert source.frame["text"].to_list() == ["hello", "bye"]


def test_url_folder_with_missing_file(http_folder, tmp_path):
    root, base, _ = http_folder
    (root / "hate" / "val_text.txt").unlink()
    with pytest.raises(SourceError, match="missing split file"):
        read_source(f"{base}/hate", tmp_path / "cache", lambda m: None)


def test_unreachable_url_says_to_set_a_local_source(tmp_path):
    with pytest.raises(SourceError, match="set TEXTOPS_SOURCE to a local copy"):
        fetch("http://127.0.0.1:9/hate/mapping.txt", tmp_path / "cache", lambda m: None)


@pytest.mark.parametrize(
    "uri, advice",
    [
        ("s3://bucket/data.csv", "use a local path, https://, gs://bucket/path, bigquery://"),
        ("gs://", "a gs:// URI needs a bucket, e.g. gs://my-bucket/data/hate"),
        ("bigquery://", "expected bigquery://[project.]dataset.table or bigquery:SELECT"),
        ("bigquery://dataset..table", "expected bigquery://[project.]dataset.table"),
    ],
)
def test_malformed_uri_says_what_to_write(tmp_path, uri, advice):
    with pytest.raises(SourceError) as error:
        read(uri, tmp_path)
    assert str(error.value).startswith(f"{uri}: ") and advice in str(error.value)


@pytest.mark.parametrize("uri", ["gs://my-bucket/data/hate", "bigquery://project.dataset.table"])
def test_google_sources_without_credentials_say_how_to_log_in(tmp_path, monkeypatch, uri):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # not on a Google Cloud VM: no metadata server
    with pytest.raises(SourceError, match="no Google Cloud credentials found") as error:
        read(uri, tmp_path)
    assert "gcloud auth application-default login" in str(error.value)


def test_landed_rows_never_enter_test(tmp_path):
    from assets.data.sources.landing import landed_files, read_landed

    (tmp_path / "ok.csv").write_text("text,label,split\nhello,positive,validation\nbye,negative,\n")
    (tmp_path / "shaped.csv").write_text("text,label,split\nhi,positive,train\nyo,negative,TEST\n")
    ok, shaped = landed_files(str(tmp_path))
    frame = read_landed(ok, ["positive", "negative"])
    assert frame["source_split"].to_list() == ["validation", "train"]
    with pytest.raises(SourceError, match="shaped.csv: 1 row\\(s\\) have split 'test'"):
        read_landed(shaped, ["positive", "negative"])


def test_a_null_text_is_the_empty_text_in_every_table_format(tmp_path):
    rows = [("hello", 0), (None, 1), ("", 0), ("bye", 1)]
    (tmp_path / "data.csv").write_text('text,label\nhello,0\n,1\n"",0\nbye,1\n')
    frame = pl.DataFrame(rows, schema={"text": pl.String, "label": pl.Int64}, orient="row")
    frame.write_parquet(tmp_path / "data.parquet")
    (tmp_path / "data.jsonl").write_text(
        '{"text": "hello", "label": 0}\n{"text": null, "label": 1}\n'
        '{"text": "", "label": 0}\n{"label": 1, "text": "bye"}\n'
    )
    for name in ("data.csv", "data.parquet", "data.jsonl"):
        texts = read(tmp_path / name, tmp_path).frame["text"]
        assert texts.to_list() == ["hello", "", "", "bye"], name


def test_a_missing_label_is_still_an_error(tmp_path):
    (tmp_path / "data.csv").write_text("text,label\nhello,0\nbye,\n")
    with pytest.raises(SourceError, match="data.csv: row 2 has no label"):
        read(tmp_path / "data.csv", tmp_path)


def test_tables_are_parsed_from_bytes_with_a_byte_order_mark_and_bad_bytes_named(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext,label\nh\xc3\xa9,0\n")
    source = read(tmp_path / "bom.csv", tmp_path)
    assert source.frame["text"].to_list() == ["hé"]
    (tmp_path / "bad.jsonl").write_bytes(
        b'{"text": "a", "label": 0}\n{"text": "\xff", "label": 1}\n'
    )
    with pytest.raises(
        SourceError, match=r"bad.jsonl: not UTF-8 text \(invalid byte 0xff on line 2"
    ):
        read(tmp_path / "bad.jsonl", tmp_path)


def test_utf8_is_checked_across_block_boundaries(monkeypatch):
    from assets.data.sources import formats

    monkeypatch.setattr(formats, "UTF8_BLOCK_BYTES", 3)
    data = "text,label\n\u00e9\u20ac\U0001f600,0\n".encode()  # 2-, 3- and 4-byte characters
    assert formats.read_table(data, "x.csv").frame["text"].to_list() == ["\u00e9\u20ac\U0001f600"]
    with pytest.raises(SourceError, match="invalid byte 0xe2 on line 3"):
        formats.read_table(data + b"x\xe2\x82,1\n", "x.csv")  # a character cut short


# --- generated hostile input: a parser returns the raw_texts frame or raises SourceError ------

FORMATS = ["d.csv", "d.jsonl", "d.ndjson", "d.parquet"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
ROWS = st.lists(
    st.dictionaries(
        st.sampled_from(["text", "label", "split", "label_name", "other"]), JSON_VALUES
    ),
    max_size=5,
)
# a few seconds per example: a parser stuck on a pathological input fails instead of hanging
PARSER_SETTINGS = settings(max_examples=300, deadline=5000)


def read_or_refuse(data: bytes, name: str) -> None:
    """The frame of RAW_SCHEMA when `data` parses; SourceError naming the file when not (any
    other exception fails the test that calls this)."""
    try:
        source = read_table(data, name)
    except SourceError as error:
        assert str(error).startswith(f"{name}: "), str(error)
        return
    assert dict(source.frame.schema) == RAW_SCHEMA
    assert source.frame["label"].is_between(0, len(source.label_names) - 1).all()


@PARSER_SETTINGS
@given(data=st.binary(max_size=300), name=st.sampled_from(FORMATS))
def test_any_bytes_are_read_or_refused_with_a_source_error(data, name):
    read_or_refuse(data, name)


@PARSER_SETTINGS
@given(ROWS)
def test_any_json_lines_are_read_or_refused_with_a_source_error(rows):
    read_or_refuse("\n".join(json.dumps(row) for row in rows).encode(), "d.jsonl")


@PARSER_SETTINGS
@given(ROWS)
def test_any_parquet_table_is_read_or_refused_with_a_source_error(rows):
    try:
        frame = pl.DataFrame(rows)
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
        return  # rows polars itself cannot make a table of
    read_or_refuse(buffer.getvalue(), "d.parquet")


@pytest.mark.parametrize("label", ["5000000", "1000000000000", "9" * 40])
def test_a_label_id_beyond_the_class_bound_is_refused_naming_its_row(label):
    started = time.perf_counter()
    with pytest.raises(SourceError) as refused:
        read_table(f"text,label\nhi,0\nhello,{label}\n".encode(), "d.csv")
    assert time.perf_counter() - started < 1  # before: 5,000,000 label names built (1.4 GB)
    message = str(refused.value)
    assert message.startswith(f"d.csv: row 2 has label id {label[:30]}; label ids are the classes")
    assert "at most 10,000" in message


def test_label_ids_below_the_bound_read_as_before():
    source = read_table(b"text,label\na,0\nb,2\nc,1\nd,9999\n", "d.csv")
    assert source.frame["label"].to_list() == [0, 2, 1, 9999]
    assert source.label_names[:3] == ["0", "1", "2"] and len(source.label_names) == 10_000


def test_a_parquet_file_over_the_row_cap_is_refused_before_it_is_decoded(monkeypatch):
    rows = 200_000
    buffer = io.BytesIO()
    pl.DataFrame({"text": ["the same tweet"] * rows, "label": [0] * rows}).write_parquet(buffer)
    assert len(buffer.getvalue()) < 10_000  # a few kilobytes that decode to 200,000 rows
    monkeypatch.setenv("TEXTOPS_MAX_ROWS", "100000")

    def decoded(*args, **kwargs):
        raise AssertionError("the rows were decoded")

    monkeypatch.setattr(pl, "read_parquet", decoded)
    with pytest.raises(SourceError) as refused:
        read_table(buffer.getvalue(), "bomb.parquet")
    assert str(refused.value) == (
        "bomb.parquet: 200,000 rows, more than the cap of 100,000 rows on a table source; set "
        "TEXTOPS_MAX_ROWS to a larger number of rows to allow it"
    )


@pytest.mark.parametrize("name", ["d.csv", "d.jsonl"])
def test_csv_and_json_lines_over_the_row_cap_are_refused(monkeypatch, name):
    frame = pl.DataFrame(
        {"text": [f"t{i}" for i in range(11)], "label": [i % 2 for i in range(11)]}
    )
    data = frame.write_csv() if name == "d.csv" else frame.write_ndjson()
    monkeypatch.setenv("TEXTOPS_MAX_ROWS", "11")
    assert read_table(data.encode(), name).frame.height == 11
    monkeypatch.setenv("TEXTOPS_MAX_ROWS", "10")
    with pytest.raises(SourceError, match=f"{name}: more than 10 rows, more than the cap of 10"):
        read_table(data.encode(), name)


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1e6"])
def test_a_nonsensical_row_cap_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("TEXTOPS_MAX_ROWS", value)
    with pytest.raises(SourceError, match=f"TEXTOPS_MAX_ROWS='{value}': expected a positive"):
        read_table(b"text,label\na,0\n", "d.csv")


@PARSER_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.text(
                alphabet=st.characters(exclude_characters='",\r\n', exclude_categories=["Cs"]),
                max_size=8,
            ),
            st.from_regex(r"\A\s?[0-9]{1,25}\s?\Z")
            | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6),
        ),
        max_size=6,
    )
)
def test_any_csv_labels_are_read_or_refused_with_a_source_error(rows):
    lines = "".join(f'"{text}","{label.replace(chr(34), "")}"\n' for text, label in rows)
    read_or_refuse(f"text,label\n{lines}".encode(), "d.csv")
