"""Where source bytes come from: the copy of the default data shipped in this package, a local
path or gs:// URI (one code path, `assets.locations`), an http(s) URL (downloaded with a
cache), or BigQuery (through dagster-gcp)."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import polars as pl

from assets.data.sources.formats import (
    TABLE_SUFFIXES,
    RawSource,
    SourceError,
    frame_to_source,
    read_table,
    read_tweeteval,
    tweeteval_file_names,
)
from assets.locations import LocationError, google_credentials, location
from assets.progress import Log, Progress

# The default data ships inside the package, so the first run needs no network; its upstream
# is one setting away (TEXTOPS_SOURCE=<UPSTREAM_SOURCE>) and reads to the same data version.
EMBEDDED = "embedded:"
DEFAULT_SOURCE = f"{EMBEDDED}tweeteval/hate"
UPSTREAM_SOURCE = "https://raw.githubusercontent.com/cardiffnlp/tweeteval/main/datasets/hate"


def read_source(uri: str, cache: Path, log: Log) -> RawSource:
    """Read any supported source URI into the raw_texts frame."""
    if uri.startswith(EMBEDDED):
        return read_embedded(uri, log)
    if uri.startswith(("https://", "http://")):
        return _read_url(uri, cache, log)
    if uri.startswith("bigquery:"):
        parse_bigquery(uri)  # a malformed URI is named before any client is made
        with as_source_error(uri), bigquery_client() as client:
            return read_bigquery(client, uri, log)
    if "://" in uri and not uri.startswith("gs://"):
        raise SourceError(
            f"{uri}: unsupported URI scheme; use a local path, https://, gs://bucket/path, "
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
        raise SourceError(str(error)) from None


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
        raise SourceError(f"{uri}: cannot read ({error})") from None


def bigquery_client():
    """A context manager of a BigQuery client from dagster-gcp's BigQueryResource (project
    from GOOGLE_CLOUD_PROJECT, credentials from the environment)."""
    from dagster_gcp import BigQueryResource

    return BigQueryResource(project=os.environ.get("GOOGLE_CLOUD_PROJECT")).get_client()


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
    for name in tweeteval_file_names():
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
