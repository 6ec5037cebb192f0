"""Reading the service's prediction log by time window, at a cost that follows the window, not
the history: log files are chosen by the hour in their names (a local folder or a gs:// prefix is
listed, and only the window's files are read), each file is parsed by polars in one call, and rows
are kept from the window's start. A file with a torn line (a crash while writing) is parsed line
by line instead, the torn line skipped and counted. Polars only, no Dagster: what a benchmark
measures is the reading alone."""

import io
import json
from dataclasses import dataclass

import polars as pl

from assets.locations import location
from textops_core.serving_log import file_hour

LOG_SCHEMA = {
    "ts": pl.Float64,
    "model_tag": pl.String,
    "request_id": pl.String,
    "text": pl.String,
    "text_length": pl.Int64,
    "label": pl.String,
    "latency_ms": pl.Float64,
    "probabilities": pl.String,
    "shadow": pl.Boolean,
}
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class WindowRead:
    frame: pl.DataFrame
    torn: int  # torn lines skipped
    files: int  # log files read
    bytes: int  # bytes read


def window_files(uri: str, since: float):
    """The log files at a local folder or gs:// prefix that can hold records from `since` on,
    chosen by the hour in their names, in name order."""
    folder = location(uri)
    if not folder.is_dir():
        return []
    chosen = []
    for path in folder.iterdir():
        hour = file_hour(path.name)
        if hour is not None and hour + 3600 > since:
            chosen.append(path)
    return sorted(chosen, key=lambda p: p.name)


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """The log's columns in LOG_SCHEMA's order and types; probabilities as JSON text."""
    if "probabilities" in frame.columns and frame.schema["probabilities"] != pl.String:
        frame = frame.with_columns(pl.col("probabilities").struct.json_encode())
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in LOG_SCHEMA.items()
        ]
    )


def _parse_lines(data: bytes) -> tuple[pl.DataFrame, int]:
    """Line by line: complete records kept, torn ones counted."""
    rows, torn = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        record["probabilities"] = json.dumps(record.get("probabilities", {}), separators=(",", ":"))
        rows.append({key: record.get(key) for key in LOG_SCHEMA})
    return pl.DataFrame(rows, schema=LOG_SCHEMA, orient="row"), torn


def parse_log(data: bytes) -> tuple[pl.DataFrame, int]:
    """One log file's records and its count of torn lines."""
    if not data.strip():
        return pl.DataFrame(schema=LOG_SCHEMA), 0
    try:
        frame = pl.read_ndjson(io.BytesIO(data))
    except (pl.exceptions.PolarsError, ValueError):
        return _parse_lines(data)
    # polars infers the columns from the first rows; a shadow record (the key is written on
    # shadow records only) further down would lose its flag and pass for a client's answer
    if "shadow" not in frame.columns and b'"shadow"' in data:
        return _parse_lines(data)
    return _conform(frame), 0


def read_window(uri: str, since: float, shadow: bool = False) -> WindowRead:
    """Every complete record at `uri` from `since` on: the answers clients got, and with
    `shadow` also the answers of candidates in shadow (never returned)."""
    frames, torn, size = [], 0, 0
    files = window_files(str(uri), since)
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # retention deleted it after the listing
            continue
        size += len(data)
        frame, skipped = parse_log(data)
        torn += skipped
        frame = frame.filter(pl.col("ts") >= since)
        frames.append(frame if shadow else frame.filter(~pl.col("shadow").fill_null(False)))
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=LOG_SCHEMA)
    return WindowRead(frame.sort("ts"), torn, len(files), size)


def read_serving_log(
    uri: str, since: float | None = None, shadow: bool = False
) -> tuple[pl.DataFrame, int]:
    """Every complete record at `uri` (from `since` on), and the count of torn lines."""
    read = read_window(uri, since if since is not None else float("-inf"), shadow)
    return read.frame, read.torn


def latency_percentiles(frame: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per model tag: request latency percentiles (ms) and the number of requests. A request's
    texts share one latency, so each request counts once (records without a request id, from
    older services, count one each)."""
    if frame.height == 0:
        return {}
    requests = (
        frame.with_row_index("_row")
        .with_columns(_request=pl.coalesce("request_id", pl.col("_row").cast(pl.String)))
        .group_by("model_tag", "_request")
        .agg(pl.col("latency_ms").first())
    )
    stats = requests.group_by("model_tag").agg(
        *[pl.col("latency_ms").quantile(q).alias(name) for name, q in PERCENTILES.items()],
        requests=pl.len(),
    )
    return {
        row["model_tag"]: {key: float(row[key]) for key in [*PERCENTILES, "requests"]}
        for row in stats.iter_rows(named=True)
        if row["p50"] is not None
    }
