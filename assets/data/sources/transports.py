"""Where source bytes come from: the copy of the default data shipped in this package, a local
path or gs:// URI (one code path, `assets.locations`), an https URL (downloaded with a cache,
`downloads`), or BigQuery (through dagster-gcp).

A URI can carry a credential (a signed URL, `user:password@`): messages and logs name a source
by `redact(uri)` only."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl

from assets.data.sources.downloads import (
    download_deadline,
    fetch,
    parse_url,
    secrets_hidden,
)
from assets.data.sources.formats import (
    TABLE_SUFFIXES,
    RawSource,
    SourceError,
    frame_to_source,
    limit,
    read_table,
    read_tweeteval,
    tweeteval_file_names,
)
from assets.data.sources.redaction import redact
from assets.locations import LocationError, google_credentials, location
from assets.progress import Log
from textops_core.settings import variable

# The default data ships inside the package, so the first run needs no network; its upstream
# is one setting away (TEXTOPS_SOURCE=<UPSTREAM_SOURCE>) and reads to the same data version.
EMBEDDED = "embedded:"
DEFAULT_SOURCE = f"{EMBEDDED}tweeteval/hate"
UPSTREAM_SOURCE = "https://raw.githubusercontent.com/cardiffnlp/tweeteval/main/datasets/hate"
URL_SCHEME = re.compile(r"\s*https?\s*:", re.IGNORECASE)
BIGQUERY_MAX_BYTES_ENV = variable("bigquery_max_bytes")


def read_source(uri: str, cache: Path, log: Log, warn: Log | None = None) -> RawSource:
    """Read any supported source URI into the raw_texts frame; `warn` (default `log`) gets what
    a person should notice, such as a stale cached copy used while the network is down. No
    error raised from here holds a secret of `uri` (see `downloads.secrets_hidden`)."""
    with secrets_hidden(uri):
        return _read_source(uri, cache, log, warn)


def _read_source(uri: str, cache: Path, log: Log, warn: Log | None) -> RawSource:
    if uri.startswith(EMBEDDED):
        return read_embedded(uri, log)
    if URL_SCHEME.match(uri):  # a malformed URL too (`https:/host`), for parse_url to refuse
        return read_url(uri, cache, log, warn or log)
    if uri.startswith("bigquery:"):
        parse_bigquery(uri)  # a malformed URI is named before any client is made
        with as_source_error(uri), bigquery_client() as client:
            return read_bigquery(client, uri, log)
    if "://" in uri and not uri.startswith("gs://"):
        raise SourceError(
            f"{redact(uri)}: unsupported URI scheme; use a local path, https://, gs://bucket/path, "
            f"bigquery://[project.]dataset.table, bigquery:SELECT … or {DEFAULT_SOURCE}"
        )
    with as_source_error(uri):
        return read_location(uri, log)


def read_location(uri: str, log: Log) -> RawSource:
    """A table file or a TweetEval folder at a local path or a gs:// URI."""
    path = location(uri)
    if path.suffix.lower() in TABLE_SUFFIXES or path.is_file():
        if not path.is_file():
            raise SourceError(f"{uri}: no such file or folder")
        log(f"reading {uri}")
        return read_table(path.read_bytes(), path.name)
    if uri.startswith("gs://") or path.is_dir():
        files = {}
        for name in tweeteval_file_names():
            if (path / name).is_file():
                files[name] = (path / name).read_bytes()
        log(f"read {len(files)} files from {uri}")
        return read_tweeteval(files, uri)
    raise SourceError(f"{uri}: no such file or folder")


def embedded_folder(uri: str) -> Path:
    """The folder of a dataset shipped in this package (`embedded:<name>`)."""
    root = Path(str(files("assets.data.sources") / "embedded"))
    name = uri.removeprefix(EMBEDDED).strip("/")
    if not name or not (root / name / "SHA256SUMS").is_file():
        shipped = sorted(str(p.parent.relative_to(root)) for p in root.rglob("SHA256SUMS"))
        raise SourceError(f"{uri}: no such embedded dataset; shipped: {', '.join(shipped)}")
    return root / name


def read_embedded(uri: str, log: Log) -> RawSource:
    """A dataset shipped in this package, checked file by file against its SHA256SUMS (the
    upstream files' checksums) before it is read."""
    folder = embedded_folder(uri)
    data = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        expected, name = line.split()
        content = (folder / name).read_bytes()
        if hashlib.sha256(content).hexdigest() != expected:
            raise SourceError(
                f"{uri}: {name} does not match its checksum in SHA256SUMS; the installed copy is "
                "damaged: reinstall textops, or set TEXTOPS_SOURCE to another copy"
            )
        data[name] = content
    log(f"reading {uri} (shipped with textops, {len(data)} files verified against SHA256SUMS)")
    return read_tweeteval(data, uri)


@contextmanager
def as_source_error(uri: str) -> Iterator[None]:
    """Location and Google Cloud errors as SourceError: what is wrong and what to do."""
    try:
        with _google_errors(uri):
            yield
    except LocationError as error:
        raise SourceError(str(error).replace(uri, redact(uri))) from None


@contextmanager
def _google_errors(uri: str) -> Iterator[None]:
    if not uri.startswith(("gs://", "bigquery:")):
        yield  # the Google client libraries are not imported for other sources
        return
    from google.api_core import exceptions

    try:
        with google_credentials(uri):
            yield
    except (exceptions.GoogleAPIError, PermissionError) as error:
        raise SourceError(f"{redact(uri)}: cannot read ({error})") from None


def bigquery_client():
    """A context manager of a BigQuery client from dagster-gcp's BigQueryResource (project
    from GOOGLE_CLOUD_PROJECT, credentials from the environment)."""
    from dagster_gcp import BigQueryResource

    return BigQueryResource(project=os.environ.get("GOOGLE_CLOUD_PROJECT")).get_client()


def parse_bigquery(uri: str) -> tuple[str, str]:
    """("query", SQL) or ("table", "[project.]dataset.table") of a bigquery: URI. A query that
    is plainly more than one statement is refused here, before any client exists."""
    spec = uri.removeprefix("bigquery:")
    if spec.lstrip().lower().startswith(("select", "with")):
        if is_script(spec):
            raise SourceError(
                f"{uri}: more than one SQL statement; a BigQuery source is one read-only SELECT "
                "(or WITH … SELECT), with no ';' before another statement"
            )
        return "query", spec
    table_id = spec.removeprefix("//")
    parts = table_id.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        raise SourceError(
            f"{uri}: expected bigquery://[project.]dataset.table or bigquery:SELECT text, "
            "label FROM …"
        )
    return "table", table_id


# Strings, quoted identifiers and comments of GoogleSQL, where a ';' ends nothing.
_SQL_QUOTED = re.compile(
    r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\""
    r"|`(?:\\.|[^`\\])*`|--[^\n]*|#[^\n]*|/\*.*?\*/",
    re.DOTALL,
)


def is_script(sql: str) -> bool:
    """Whether `sql` has a statement after a `;` (outside strings and comments). Only a first
    guard, which needs no network; BigQuery's dry run decides what the statement is."""
    code = _SQL_QUOTED.sub(" ", sql)
    _, semicolon, rest = code.partition(";")
    return bool(semicolon) and bool(rest.replace(";", "").strip())


def bigquery_max_bytes() -> int:
    return limit("bigquery_max_bytes")


def read_bigquery(client, uri: str, log: Log) -> RawSource:
    """`bigquery://project.dataset.table` (or `dataset.table`) or `bigquery:SELECT …`: rows with
    `text` and `label` (id or name) and optionally `split`.

    A table is read with list_rows, which bills no query bytes. A query is first a dry run: it
    must be one SELECT by BigQuery's own reading (no DML, DDL or script, whatever the text looks
    like) and process at most TEXTOPS_BIGQUERY_MAX_BYTES; the real query runs with that cap as
    `maximum_bytes_billed`, so BigQuery itself refuses to bill more."""
    kind, spec = parse_bigquery(uri)
    if kind == "query":
        table = _run_query(client, uri, spec, log)
    else:
        log(f"reading BigQuery table {spec}")
        with _bigquery_failure(uri, "read"):
            table = client.list_rows(spec).to_dataframe()
    return frame_to_source(pl.from_pandas(table), uri)


def _run_query(client, uri: str, sql: str, log: Log):
    from google.cloud import bigquery

    cap = bigquery_max_bytes()
    with _bigquery_failure(uri, "dry run"):
        dry_run = client.query(
            sql, job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        )
    if dry_run.statement_type != "SELECT":
        raise SourceError(
            f"{uri}: BigQuery reads this as a {dry_run.statement_type} statement; a source "
            "query must be one read-only SELECT (or WITH … SELECT). Nothing was run"
        )
    processed = dry_run.total_bytes_processed or 0
    if processed > cap:
        raise SourceError(
            f"{uri}: the query would process {processed:,} bytes, more than the cap of {cap:,} "
            f"bytes; select fewer columns or rows, or set {BIGQUERY_MAX_BYTES_ENV} to a larger "
            "number of bytes. Nothing was run"
        )
    log(f"running the BigQuery query ({processed:,} bytes to process, at most {cap:,} billed)")
    with _bigquery_failure(uri, "read"):
        job = client.query(sql, job_config=bigquery.QueryJobConfig(maximum_bytes_billed=cap))
        return job.to_dataframe()


@contextmanager
def _bigquery_failure(uri: str, step: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:  # google-cloud-bigquery raises many error types
        raise SourceError(f"{uri}: BigQuery {step} failed: {error}") from None


# --- https sources ---------------------------------------------------------------------------


def read_url(uri: str, cache: Path, log: Log, warn: Log) -> RawSource:
    """A table file or a TweetEval folder at an https URL (see `downloads` for what a download
    may do and how it is cached).

    `#sha256=<hex>` pins the content. For a file, it is the file's sha256 (`sha256sum
    data.csv`). For a TweetEval folder, it is the sha256 of the folder's SHA256SUMS listing in
    the layout textops ships (`embedded/tweeteval/hate/SHA256SUMS`): `sha256sum mapping.txt
    train_text.txt train_labels.txt val_text.txt val_labels.txt test_text.txt test_labels.txt |
    sha256sum`. One pin then covers every file, and the shipped SHA256SUMS of a dataset gives
    the pin of its upstream folder."""
    source = parse_url(uri)
    deadline = download_deadline()
    path = urlsplit(source.address).path.rstrip("/")
    if path.lower().endswith(TABLE_SUFFIXES):
        try:
            data = fetch(source, cache, log, warn, deadline)
        except FileNotFoundError:
            raise SourceError(f"{source.shown}: not found (HTTP 404); check the URL") from None
        return read_table(data, path.rsplit("/", 1)[-1])
    files = {}
    for name in tweeteval_file_names():
        try:
            files[name] = fetch(source.child(name), cache, log, warn, deadline)
        except FileNotFoundError:
            continue  # read_tweeteval names every missing file at once
    if source.pin and len(files) == len(tweeteval_file_names()):
        listing = folder_listing(files)
        digest = hashlib.sha256(listing.encode()).hexdigest()
        if digest != source.pin:
            raise SourceError(
                f"{source.shown}: the folder's SHA256SUMS listing has sha256 {digest}, not the "
                f"pinned {source.pin}; the files changed at the source or on the way. They "
                f"hash to:\n{listing}Check them, then update the #sha256= pin"
            )
    return read_tweeteval(files, source.shown)


def folder_listing(files: dict[str, bytes]) -> str:
    """`sha256sum`'s output for the files of a TweetEval folder, in the order of SHA256SUMS."""
    return "".join(
        f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in tweeteval_file_names()
    )
