"""The source formats: the TweetEval layout and tables (CSV / Parquet / JSONL) with `text` and
`label` columns, parsed from bytes into the `raw_texts` frame. Every problem raises `SourceError`
with a message that names the file and what is wrong with it."""

from __future__ import annotations

import codecs
import io
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.settings import default, setting
from textops_core.settings import variable

# Split names in textops -> file stems in the TweetEval layout.
TWEETEVAL_SPLITS = {"train": "train", "validation": "val", "test": "test"}
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
# UTF-8 is checked this many bytes at a time, so checking a file costs no copy of it.
UTF8_BLOCK_BYTES = 1 << 24

# Label ids name classes 0..K-1, and the label set is built as that range: an id is a class of
# the model's output layer, so K is bounded (a few thousand is already more classes than a
# tweet classifier has), and one row holding 10**12 cannot make a list of 10**12 names.
MAX_CLASSES = 10_000
# Rows a table source may hold once decoded: compressed Parquet holds millions of rows in a few
# kilobytes, which the download's byte cap does not see. The default is twice what the data
# volume benchmark runs through the pipeline.
MAX_ROWS_ENV = variable("max_rows")

RAW_SCHEMA = {
    "text": pl.String,
    "label": pl.Int64,
    "label_name": pl.String,
    "source_split": pl.String,
}


class SourceError(ValueError):
    """The raw source is missing, unreadable or malformed."""


@dataclass(frozen=True)
class RawSource:
    frame: pl.DataFrame  # columns of RAW_SCHEMA
    label_names: list[str]  # label id -> name


def limit(field: str):
    """A cap from the pipeline's settings (assets/settings.py); a value that is not a positive,
    finite number (infinity too) is refused, naming its variable, rather than read as "no
    limit"."""
    try:
        return setting(field)
    except ValueError:
        raw = os.environ.get(variable(field), "").strip()
        name, was = variable(field), default(field)
        raise SourceError(f"{name}={raw!r}: expected a positive number (default {was})") from None


def max_rows() -> int:
    return limit("max_rows")


def tweeteval_file_names() -> list[str]:
    names = ["mapping.txt"]
    for stem in TWEETEVAL_SPLITS.values():
        names += [f"{stem}_text.txt", f"{stem}_labels.txt"]
    return names


def read_tweeteval(files: dict[str, bytes], origin: str) -> RawSource:
    """TweetEval layout: mapping.txt plus aligned {train,val,test}_{text,labels}.txt files."""
    missing = [name for name in tweeteval_file_names() if name not in files]
    if missing:
        raise SourceError(
            f"{origin}: missing split file(s) {', '.join(missing)}; a TweetEval folder needs "
            "mapping.txt and {train,val,test}_text.txt / _labels.txt"
        )
    label_names = _parse_mapping(_lines(files["mapping.txt"], "mapping.txt").to_list())
    frames = []
    for split, stem in TWEETEVAL_SPLITS.items():
        text_name, labels_name = f"{stem}_text.txt", f"{stem}_labels.txt"
        texts = _lines(files[text_name], text_name)
        labels = _lines(files[labels_name], labels_name)
        if texts.len() != labels.len():
            raise SourceError(
                f"{origin}: {text_name} has {texts.len()} lines but {labels_name} has "
                f"{labels.len()}; text and label files must be aligned line by line"
            )
        ids = _label_id_lines(labels, labels_name, label_names)
        frames.append(
            pl.DataFrame({"text": texts, "label": ids}).with_columns(source_split=pl.lit(split))
        )
    frame = pl.concat(frames)
    return RawSource(with_label_names(frame, label_names), label_names)


def _lines(data: bytes, name: str) -> pl.Series:
    """The lines of a text file as one polars column: a Python string per line would cost
    tens of bytes per line on top of the text."""
    data = _utf8(data, name)
    # Split on '\n' only: str.splitlines would also split on U+2028 and friends inside tweets.
    lines = pl.Series([data], dtype=pl.Binary).cast(pl.String).str.split("\n").explode()
    if lines[-1] == "":
        lines = lines.head(-1)
    if lines.str.strip_chars().eq("").all():
        raise SourceError(f"{name}: empty file")
    return lines.str.strip_suffix("\r")


def _utf8(data: bytes, name: str) -> bytes:
    """`data` without its UTF-8 byte-order mark, if any, once checked to be UTF-8. Checked a
    block at a time and parsed from bytes by polars: decoded whole, a file would be held again
    as a Python str, at up to four bytes a character (one emoji makes every character four)."""
    view = memoryview(data)
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(data), UTF8_BLOCK_BYTES):
        end = start + UTF8_BLOCK_BYTES
        pending = len(decoder.getstate()[0])  # bytes of a character the last block cut
        try:
            decoder.decode(view[start:end], final=end >= len(data))
        except UnicodeDecodeError as error:  # its positions count the pending bytes first
            raise _not_utf8(data, name, start - pending + error.start) from None
    return data.removeprefix(codecs.BOM_UTF8)


def _not_utf8(data: bytes, name: str, position: int) -> SourceError:
    line = data[:position].count(b"\n") + 1
    return SourceError(
        f"{name}: not UTF-8 text (invalid byte {data[position]:#04x} on line {line}); "
        "re-encode the file as UTF-8"
    )


def _parse_mapping(lines: list[str]) -> list[str]:
    mapping: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise SourceError(f"mapping.txt line {number}: expected '<id>\\t<name>', got {line!r}")
        mapping[int(parts[0])] = parts[1].strip()
    if sorted(mapping) != list(range(len(mapping))):
        raise SourceError(f"mapping.txt: label ids must be 0..K-1, got {sorted(mapping)}")
    return [mapping[i] for i in range(len(mapping))]


def _label_id_lines(labels: pl.Series, name: str, label_names: list[str]) -> pl.Series:
    """Label ids of a TweetEval labels file; the first line that is not an id of mapping.txt
    raises, named by its number."""
    ids = labels.str.strip_chars().cast(pl.Int64, strict=False)
    valid = ids.is_between(0, len(label_names) - 1).fill_null(False)
    if valid.all():
        return ids
    row = int((~valid).arg_true()[0])
    if ids[row] is None:
        raise SourceError(f"{name} line {row + 1}: label {labels[row]!r} is not an integer id")
    raise SourceError(
        f"{name} line {row + 1}: label {ids[row]} is not in mapping.txt "
        f"(known ids: {', '.join(map(str, range(len(label_names))))})"
    )


def with_label_names(frame: pl.DataFrame, label_names: list[str]) -> pl.DataFrame:
    names = dict(enumerate(label_names))
    return frame.with_columns(
        label_name=pl.col("label").replace_strict(names, default=None, return_dtype=pl.String)
    ).select([pl.col(c).cast(t) for c, t in RAW_SCHEMA.items()])


def read_table(data: bytes, name: str) -> RawSource:
    """CSV / Parquet / JSONL with `text` and `label` (id or name); optional `split`. Texts follow
    `frame_to_source`'s policy: a missing text is the empty text."""
    suffix = Path(name).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise SourceError(f"{name}: unsupported file type; use {', '.join(TABLE_SUFFIXES)}")
    if not data or data.isspace():  # bytes.strip() would copy the file
        raise SourceError(f"{name}: empty file")
    cap = max_rows()
    try:
        frame = _parse_table(data, name, suffix, cap)
    except SourceError:
        raise
    except Exception as error:  # polars raises several error types for malformed files
        raise SourceError(f"{name}: cannot parse as {suffix[1:]}: {error}") from None
    if frame.height > cap:
        raise _too_many_rows(name, f"more than {cap:,}", cap)
    return frame_to_source(frame, name)


def _parse_table(data: bytes, name: str, suffix: str, cap: int) -> pl.DataFrame:
    """At most `cap` + 1 rows of the table: a Parquet file's row count is read from its footer
    before any row is decoded; CSV and JSON lines stop one row past the cap."""
    if suffix == ".parquet":
        rows = pl.scan_parquet(io.BytesIO(data)).select(pl.len()).collect().item()
        if rows > cap:
            raise _too_many_rows(name, f"{rows:,}", cap)
        return pl.read_parquet(io.BytesIO(data))
    if suffix == ".csv":
        return pl.read_csv(_utf8(data, name), infer_schema_length=0, n_rows=cap + 1)
    return pl.read_ndjson(_utf8(data, name), n_rows=cap + 1)


def _too_many_rows(name: str, rows: str, cap: int) -> SourceError:
    return SourceError(
        f"{name}: {rows} rows, more than the cap of {cap:,} rows on a table source; set "
        f"{MAX_ROWS_ENV} to a larger number of rows to allow it"
    )


def frame_to_source(frame: pl.DataFrame, name: str) -> RawSource:
    """A table with `text` and `label` (id or name) and an optional split column.

    A null text, in any format, is the empty text "": an unquoted empty CSV cell, a JSON null or
    missing key, a Parquet or BigQuery NULL. Exporters write an empty text either way (Python's
    csv module and most databases leave it unquoted), and the TweetEval layout has no null at
    all, so one policy keeps the verdict independent of the format: empty texts are counted by
    raw_texts' `empty_text_share` check (a warning, an error above its threshold) and dropped
    by text_splits. A missing label stays an error: a row cannot be learned without one."""
    for column in ("text", "label"):
        if column not in frame.columns:
            raise SourceError(
                f"{name}: no '{column}' column (found: {', '.join(frame.columns) or 'none'}); "
                "tables need 'text' and 'label' columns"
            )
    if frame.height == 0:
        raise SourceError(f"{name}: no rows")
    frame = frame.with_columns(_as_text(frame, "text", name).fill_null(""))
    if frame["label"].null_count():
        row = frame["label"].is_null().arg_true()[0]
        raise SourceError(f"{name}: row {row + 1} has no label")
    labels, label_names = _label_ids(frame, name)
    split = _split_column(frame, name)
    out = pl.DataFrame({"text": frame["text"], "label": labels, "source_split": split})
    return RawSource(with_label_names(out, label_names), label_names)


def _as_text(frame: pl.DataFrame, column: str, name: str) -> pl.Series:
    """`column` as strings: a number reads as its digits; a list, a record or bytes that are
    not UTF-8 (a JSON array, a Parquet struct or binary column) is refused, naming the column."""
    series = frame[column]
    try:
        if series.dtype.is_nested() or series.dtype == pl.Object:
            raise pl.exceptions.InvalidOperationError(str(series.dtype))
        return series.cast(pl.String)
    except pl.exceptions.PolarsError:
        raise SourceError(
            f"{name}: column '{column}' holds {series.dtype} values, which are not text; "
            f"expected one {column} per row, a string (or, for a label, an integer id)"
        ) from None


def _label_ids(frame: pl.DataFrame, name: str) -> tuple[pl.Series, list[str]]:
    raw = _as_text(frame, "label", name).str.strip_chars()
    if raw.str.contains(r"^\d+$").all():
        ids = _bounded_ids(raw, name)
        classes = range(int(ids.max()) + 1)
        if "label_name" in frame.columns:
            # the name a row gives its id, the last row's winning: one row per id, not per text
            named = pl.DataFrame({"id": ids, "name": _as_text(frame, "label_name", name)})
            pairs = dict(named.unique("id", keep="last").iter_rows())
            label_names = [pairs.get(i, str(i)) for i in classes]
        else:
            label_names = [str(i) for i in classes]
        return ids, label_names
    label_names = sorted(raw.unique().to_list())
    index = {label: i for i, label in enumerate(label_names)}
    return raw.replace_strict(index, return_dtype=pl.Int64), label_names


def _bounded_ids(raw: pl.Series, name: str) -> pl.Series:
    """Label ids (digits) as integers, each below MAX_CLASSES; the first that is not names its
    row."""
    ids = raw.cast(pl.Int64, strict=False)  # null where the digits overflow
    beyond = ids.is_null() | (ids >= MAX_CLASSES)
    if not beyond.any():
        return ids
    row = int(beyond.arg_true()[0])
    raise SourceError(
        f"{name}: row {row + 1} has label id {raw[row][:30]}; label ids are the classes 0..K-1, "
        f"at most {MAX_CLASSES:,} of them (a label may also be a name, such as 'spam')"
    )


def _split_column(frame: pl.DataFrame, name: str) -> pl.Series:
    column = next((c for c in ("split", "source_split") if c in frame.columns), None)
    if column is None:
        return pl.repeat(None, frame.height, dtype=pl.String, eager=True).alias("source_split")
    raw = _as_text(frame, column, name).str.strip_chars().str.to_lowercase()
    unknown = sorted(set(raw.drop_nulls().unique().to_list()) - set(SPLIT_ALIASES))
    if unknown:
        raise SourceError(
            f"{name}: unknown split name(s) {unknown} in column '{column}'; "
            f"use {', '.join(sorted(set(SPLIT_ALIASES.values())))}"
        )
    return raw.replace(SPLIT_ALIASES)
