"""Readers for every supported raw source; each yields the `raw_texts` frame and its label names.

Supported URIs: a local folder in the TweetEval layout, a local CSV / Parquet / JSONL file with
`text` and `label` columns, or an http(s) URL of either. Every problem raises `SourceError` with a
message that names the file and what is wrong with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.progress import Log, Progress

DEFAULT_SOURCE = "https://raw.githubusercontent.com/cardiffnlp/tweeteval/main/datasets/hate"

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


def read_source(uri: str, cache: Path, log: Log) -> RawSource:
    """Read any supported source URI into the raw_texts frame."""
    if uri.startswith(("https://", "http://")):
        return _read_url(uri, cache, log)
    if uri.startswith("gs://"):
        return _read_gcs(uri, log)
    if uri.startswith("bigquery:"):
        parse_bigquery(uri)  # a malformed URI is named before any client is made
        with _google_credentials(uri), bigquery_client() as client:
            return read_bigquery(client, uri, log)
    if "://" in uri:
        raise SourceError(
            f"{uri}: unsupported URI scheme; use a local path, https://, gs://bucket/path, "
            "bigquery://[project.]dataset.table or bigquery:SELECT …"
        )
    path = Path(uri).expanduser()
    if not path.exists():
        raise SourceError(f"{uri}: no such file or folder")
    if path.is_dir():
        files = {name: path / name for name in _tweeteval_file_names()}
        return read_tweeteval({n: p.read_bytes() for n, p in files.items() if p.is_file()}, uri)
    return read_table(path.read_bytes(), path.name)


def _tweeteval_file_names() -> list[str]:
    names = ["mapping.txt"]
    for stem in TWEETEVAL_SPLITS.values():
        names += [f"{stem}_text.txt", f"{stem}_labels.txt"]
    return names


def read_tweeteval(files: dict[str, bytes], origin: str) -> RawSource:
    """TweetEval layout: mapping.txt plus aligned {train,val,test}_{text,labels}.txt files."""
    missing = [name for name in _tweeteval_file_names() if name not in files]
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
    return RawSource(_with_label_names(frame, label_names), label_names)


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


def _with_label_names(frame: pl.DataFrame, label_names: list[str]) -> pl.DataFrame:
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
    return RawSource(_with_label_names(out, label_names), label_names)


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


# --- gs:// sources --------------------------------------------------------------------------


def gcs_client():
    """A storage client; against an emulator (STORAGE_EMULATOR_HOST) no credentials are needed."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "emulator"),
            credentials=AnonymousCredentials(),
        )
    return storage.Client()


def split_gcs_uri(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise SourceError(f"{uri}: a gs:// URI needs a bucket, e.g. gs://my-bucket/data/hate")
    return bucket, name.strip("/")


def _read_gcs(uri: str, log: Log) -> RawSource:
    from google.api_core import exceptions

    bucket_name, name = split_gcs_uri(uri)
    try:
        with _google_credentials(uri):
            bucket = gcs_client().bucket(bucket_name)
        if name.lower().endswith(TABLE_SUFFIXES):
            blob = bucket.blob(name)
            if not blob.exists():
                raise SourceError(f"{uri}: no such object")
            log(f"downloading {uri}")
            return read_table(blob.download_as_bytes(), name.rsplit("/", 1)[-1])
        files = {}
        for file_name in _tweeteval_file_names():
            blob = bucket.blob(f"{name}/{file_name}" if name else file_name)
            if blob.exists():
                files[file_name] = blob.download_as_bytes()
        log(f"downloaded {len(files)} files from {uri}")
        return read_tweeteval(files, uri)
    except exceptions.GoogleAPIError as error:
        raise SourceError(f"{uri}: cannot read from GCS ({error})") from None


# --- BigQuery sources ---------------------------------------------------------------------


def bigquery_client():
    """A context manager of a BigQuery client from dagster-gcp's BigQueryResource (project
    from GOOGLE_CLOUD_PROJECT, credentials from the environment)."""
    from dagster_gcp import BigQueryResource

    return BigQueryResource(project=os.environ.get("GOOGLE_CLOUD_PROJECT")).get_client()


@contextlib.contextmanager
def _google_credentials(uri: str) -> Iterator[None]:
    """Turns "no credentials" from the Google client libraries into what to do about it."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        yield
    except DefaultCredentialsError:
        raise SourceError(
            f"{uri}: no Google Cloud credentials found; set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file or run `gcloud auth application-default login`, and set "
            "GOOGLE_CLOUD_PROJECT"
        ) from None


def parse_bigquery(uri: str) -> tuple[str, str]:
    """("query", SQL) or ("table", "[project.]dataset.table") of a bigquery: URI."""
    spec = uri.removeprefix("bigquery:")
    if spec.lstrip().lower().startswith(("select", "with")):
        return "query", spec
    table_id = spec.removeprefix("//")
    parts = table_id.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise SourceError(
            f"{uri}: expected bigquery://[project.]dataset.table or bigquery:SELECT text, "
            "label FROM …"
        )
    return "table", table_id


def read_bigquery(client, uri: str, log: Log) -> RawSource:
    """`bigquery://project.dataset.table` (or `dataset.table`) or `bigquery:SELECT …`: rows with
    `text` and `label` (id or name) and optionally `split`."""
    kind, spec = parse_bigquery(uri)
    try:
        if kind == "query":
            log("running the BigQuery query")
            table = client.query(spec).to_dataframe()
        else:
            log(f"reading BigQuery table {spec}")
            table = client.list_rows(spec).to_dataframe()
    except Exception as error:  # google-cloud-bigquery raises many error types
        raise SourceError(f"{uri}: BigQuery read failed: {error}") from None
    return frame_to_source(pl.from_pandas(table), uri)


# --- https sources ---------------------------------------------------------------------------


def _read_url(url: str, cache: Path, log: Log) -> RawSource:
    base = url.rstrip("/")
    if base.lower().endswith(TABLE_SUFFIXES):
        return read_table(fetch(base, cache, log), base.rsplit("/", 1)[-1])
    files = {}
    for name in _tweeteval_file_names():
        try:
            files[name] = fetch(f"{base}/{name}", cache, log)
        except FileNotFoundError:
            continue  # read_tweeteval names every missing file at once
    return read_tweeteval(files, url)


def fetch(url: str, cache: Path, log: Log) -> bytes:
    """Download `url` with a progress log; blobs are cached by content hash, revalidated by ETag.

    Raises FileNotFoundError on 404 and SourceError when the URL cannot be reached and nothing is
    cached for it.
    """
    index_path = cache / "downloads" / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    entry = index.get(url)
    blob = cache / "downloads" / "blobs" / entry["sha256"] if entry else None
    request = urllib.request.Request(url, headers={"User-Agent": "textops"})
    if entry and blob and blob.exists() and entry.get("etag"):
        request.add_header("If-None-Match", entry["etag"])
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = _read_with_progress(response, url, log)
            etag = response.headers.get("ETag")
    except urllib.error.HTTPError as error:
        if error.code == 304 and blob is not None:
            log(f"{url}: unchanged (cached {entry['sha256'][:12]})")
            return blob.read_bytes()
        if error.code == 404:
            raise FileNotFoundError(url) from None
        raise SourceError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        if blob is not None and blob.exists():
            log(f"{url}: unreachable ({error}); using the cached copy {entry['sha256'][:12]}")
            return blob.read_bytes()
        raise SourceError(
            f"{url}: cannot download ({getattr(error, 'reason', error)}). If this machine is "
            "offline, set TEXTOPS_SOURCE to a local copy (a TweetEval folder or a CSV / Parquet "
            "/ JSONL file)"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    blob = cache / "downloads" / "blobs" / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        tmp = blob.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(blob)
    index[url] = {"sha256": digest, "etag": etag}
    tmp_index = index_path.with_suffix(".tmp")
    tmp_index.write_text(json.dumps(index, indent=2))
    tmp_index.replace(index_path)
    return data


def _read_with_progress(response, url: str, log: Log, every_s: float = 2.0) -> bytes:
    total = int(response.headers.get("Content-Length") or 0)
    progress = Progress(log, f"downloading {url}", total / 1e6, "MB", every_s)
    chunks, done = [], 0
    while chunk := response.read(1 << 16):
        chunks.append(chunk)
        done += len(chunk)
        progress.update(done / 1e6)
    progress.finish()
    return b"".join(chunks)


# --- landed files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LandedFile:
    name: str
    size: int
    checksum: str  # sha256 of a local file, the object's MD5 on GCS
    read: Callable[[], bytes]


def landed_files(location: str) -> list[LandedFile]:
    """Labelled files dropped into the landing folder (a path or a gs:// prefix), by name."""
    if location.startswith("gs://"):
        bucket, prefix = split_gcs_uri(location)
        blobs = gcs_client().list_blobs(bucket, prefix=f"{prefix}/" if prefix else None)
        return sorted(
            (
                LandedFile(
                    blob.name.rsplit("/", 1)[-1],
                    int(blob.size or 0),
                    str(blob.md5_hash),
                    blob.download_as_bytes,
                )
                for blob in blobs
                if blob.name.lower().endswith(TABLE_SUFFIXES)
                and "/" not in blob.name[len(prefix) + 1 if prefix else 0 :]
            ),
            key=lambda f: f.name,
        )
    folder = Path(location).expanduser()
    if not folder.is_dir():
        return []
    return [
        LandedFile(
            p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest(), p.read_bytes
        )
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
    ]


def read_landed(landed: LandedFile, label_names: list[str]) -> pl.DataFrame:
    """A landed table mapped onto the main source's labels (by name, or by id when the file
    carries ids); rows go to train unless the file has a split column."""
    source = read_table(landed.read(), landed.name)
    frame = source.frame
    names = set(frame["label_name"].unique().to_list())
    if names <= set(label_names):
        index = {name: i for i, name in enumerate(label_names)}
        frame = frame.with_columns(
            label=pl.col("label_name").replace_strict(index, return_dtype=pl.Int64)
        )
    elif source.label_names == [str(i) for i in range(len(source.label_names))]:
        unknown = sorted(set(frame["label"].to_list()) - set(range(len(label_names))))
        if unknown:
            raise SourceError(
                f"{landed.name}: label ids {unknown} are not in the label set "
                f"(0..{len(label_names) - 1}: {', '.join(label_names)})"
            )
        frame = _with_label_names(frame.drop("label_name"), label_names)
    else:
        raise SourceError(
            f"{landed.name}: labels {sorted(names - set(label_names))} are not in "
            f"the label set ({', '.join(label_names)})"
        )
    return frame.with_columns(pl.col("source_split").fill_null("train")).select(
        [pl.col(c).cast(t) for c, t in RAW_SCHEMA.items()]
    )
