"""The source formats: the TweetEval layout and tables (CSV / Parquet / JSONL) with `text` and
`label` columns, parsed from bytes into the `raw_texts` frame. Every problem raises `SourceError`
with a message that names the file and what is wrong with it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

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
    label_names = _parse_mapping(_lines(files["mapping.txt"], "mapping.txt"))
    frames = []
    for split, stem in TWEETEVAL_SPLITS.items():
        text_name, labels_name = f"{stem}_text.txt", f"{stem}_labels.txt"
        texts = _lines(files[text_name], text_name)
        labels = _lines(files[labels_name], labels_name)
        if len(texts) != len(labels):
            raise SourceError(
                f"{origin}: {text_name} has {len(texts)} lines but {labels_name} has "
                f"{len(labels)}; text and label files must be aligned line by line"
            )
        ids = [
            _parse_label_id(raw, labels_name, i + 1, label_names) for i, raw in enumerate(labels)
        ]
        frames.append(
            pl.DataFrame(
                {"text": texts, "label": ids}, schema={"text": pl.String, "label": pl.Int64}
            ).with_columns(source_split=pl.lit(split))
        )
    frame = pl.concat(frames)
    return RawSource(with_label_names(frame, label_names), label_names)


def _lines(data: bytes, name: str) -> list[str]:
    text = _decode(data, name)
    if not text.strip():
        raise SourceError(f"{name}: empty file")
    # Split on '\n' only: str.splitlines would also split on U+2028 and friends inside tweets.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SourceError(
            f"{name}: not UTF-8 text (invalid byte {data[error.start]:#04x} on line {line}); "
            "re-encode the file as UTF-8"
        ) from None


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


def _parse_label_id(raw: str, name: str, line: int, label_names: list[str]) -> int:
    value = raw.strip()
    if not value.lstrip("-").isdigit():
        raise SourceError(f"{name} line {line}: label {raw!r} is not an integer id")
    label = int(value)
    if not 0 <= label < len(label_names):
        raise SourceError(
            f"{name} line {line}: label {label} is not in mapping.txt "
            f"(known ids: {', '.join(map(str, range(len(label_names))))})"
        )
    return label


def with_label_names(frame: pl.DataFrame, label_names: list[str]) -> pl.DataFrame:
    names = dict(enumerate(label_names))
    return frame.with_columns(
        label_name=pl.col("label").replace_strict(names, default=None, return_dtype=pl.String)
    ).select([pl.col(c).cast(t) for c, t in RAW_SCHEMA.items()])


def read_table(data: bytes, name: str) -> RawSource:
    """CSV / Parquet / JSONL with `text` and `label` (id or name); optional `split`."""
    suffix = Path(name).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise SourceError(f"{name}: unsupported file type; use {', '.join(TABLE_SUFFIXES)}")
    if not data.strip():
        raise SourceError(f"{name}: empty file")
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(io.BytesIO(data))
        else:
            text = _decode(data, name)
            if suffix == ".csv":
                frame = pl.read_csv(io.StringIO(text), infer_schema_length=0)
            else:
                frame = pl.read_ndjson(io.StringIO(text))
    except SourceError:
        raise
    except Exception as error:  # polars raises several error types for malformed files
        raise SourceError(f"{name}: cannot parse as {suffix[1:]}: {error}") from None
    return frame_to_source(frame, name)


def frame_to_source(frame: pl.DataFrame, name: str) -> RawSource:
    """A table with `text` and `label` (id or name) and an optional split column."""
    for column in ("text", "label"):
        if column not in frame.columns:
            raise SourceError(
                f"{name}: no '{column}' column (found: {', '.join(frame.columns) or 'none'}); "
                "tables need 'text' and 'label' columns"
            )
    if frame.height == 0:
        raise SourceError(f"{name}: no rows")
    frame = frame.with_columns(pl.col("text").cast(pl.String))
    if frame["label"].null_count():
        row = frame["label"].is_null().arg_true()[0]
        raise SourceError(f"{name}: row {row + 1} has no label")
    labels, label_names = _label_ids(frame, name)
    split = _split_column(frame, name)
    out = pl.DataFrame({"text": frame["text"], "label": labels, "source_split": split})
    return RawSource(with_label_names(out, label_names), label_names)


def _label_ids(frame: pl.DataFrame, name: str) -> tuple[pl.Series, list[str]]:
    raw = frame["label"].cast(pl.String).str.strip_chars()
    if raw.str.contains(r"^\d+$").all():
        ids = raw.cast(pl.Int64)
        present = sorted(ids.unique().to_list())
        if "label_name" in frame.columns:
            pairs = dict(
                zip(ids.to_list(), frame["label_name"].cast(pl.String).to_list(), strict=True)
            )
            label_names = [pairs.get(i, str(i)) for i in range(max(present) + 1)]
        else:
            label_names = [str(i) for i in range(max(present) + 1)]
        if present[0] < 0:
            raise SourceError(f"{name}: label ids must be 0..K-1, got {present}")
        return ids, label_names
    label_names = sorted(raw.unique().to_list())
    index = {label: i for i, label in enumerate(label_names)}
    return raw.replace_strict(index, return_dtype=pl.Int64), label_names


def _split_column(frame: pl.DataFrame, name: str) -> pl.Series:
    column = next((c for c in ("split", "source_split") if c in frame.columns), None)
    if column is None:
        return pl.Series("source_split", [None] * frame.height, dtype=pl.String)
    raw = frame[column].cast(pl.String).str.strip_chars().str.to_lowercase()
    unknown = sorted(set(raw.drop_nulls().to_list()) - set(SPLIT_ALIASES))
    if unknown:
        raise SourceError(
            f"{name}: unknown split name(s) {unknown} in column '{column}'; "
            f"use {', '.join(sorted(set(SPLIT_ALIASES.values())))}"
        )
    return raw.replace(SPLIT_ALIASES)
