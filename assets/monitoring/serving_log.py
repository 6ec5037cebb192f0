"""`serving_log`: the predictions the service logged in a time window, as one parquet.

Reading a window costs what the window holds: log files are chosen by the hour in their names
(a local folder or a gs:// prefix is listed, and only the window's files are read), each file is
parsed by polars in one call, and rows are kept from the window's start. A file with a torn line
(a crash while writing) is parsed line by line instead, the torn line skipped and counted."""

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.interfaces.manifests import MANIFEST_IO, ServingLogManifest, as_output
from assets.interfaces.store import ArtifactStore
from assets.locations import location
from assets.metadata import markdown_table, numeric_metadata
from assets.versioning import source_version
from bento.serving_log import default_log_dir, file_hour

LOG_SCHEMA = {
    "ts": pl.Float64,
    "model_tag": pl.String,
    "request_id": pl.String,
    "text": pl.String,
    "text_length": pl.Int64,
    "label": pl.String,
    "latency_ms": pl.Float64,
    "probabilities": pl.String,
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
        return _conform(pl.read_ndjson(io.BytesIO(data))), 0
    except (pl.exceptions.PolarsError, ValueError):
        return _parse_lines(data)


def read_window(uri: str, since: float) -> WindowRead:
    """Every complete record at `uri` from `since` on."""
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
        frames.append(frame.filter(pl.col("ts") >= since))
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=LOG_SCHEMA)
    return WindowRead(frame.sort("ts"), torn, len(files), size)


def read_serving_log(uri: str, since: float | None = None) -> tuple[pl.DataFrame, int]:
    """Every complete record at `uri` (from `since` on), and the count of torn lines."""
    read = read_window(uri, since if since is not None else float("-inf"))
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


def latency_markdown(latency: dict[str, dict[str, float]]) -> str:
    rows = [
        [tag, int(s["requests"]), *(f"{s[p]:.1f}" for p in PERCENTILES)]
        for tag, s in sorted(latency.items())
    ]
    header = ["model", "requests", *(f"{p} ms" for p in PERCENTILES)]
    return "\n".join(markdown_table(header, rows))


class ServingLogConfig(dg.Config):
    log_dir: str = Field(
        "",
        description="Folder (or gs:// prefix) of the service's log; empty: "
        "$TEXTOPS_SERVING_LOG, else <TEXTOPS_HOME>/serving_log",
    )
    window_hours: float = Field(24.0, gt=0, description="Keep predictions this recent")


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "parquet"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Predictions the service logged in the last window_hours, as one parquet, with "
    "each model's request latency percentiles.",
)
def serving_log(
    context: dg.AssetExecutionContext, config: ServingLogConfig, store: ArtifactStore
) -> dg.Output[ServingLogManifest]:
    default = default_log_dir()
    directory = config.log_dir or (str(default) if default else "")
    now = datetime.now(UTC)
    since = (now - timedelta(hours=config.window_hours)).timestamp()
    # Before any traffic the log is empty, not missing: a fresh deployment materializes it.
    if not directory:
        read = WindowRead(pl.DataFrame(schema=LOG_SCHEMA), 0, 0, 0)
        note = "the service's prediction log is off (TEXTOPS_SERVING_LOG=off)"
    elif not location(directory).is_dir():
        read = WindowRead(pl.DataFrame(schema=LOG_SCHEMA), 0, 0, 0)
        note = f"the service has not logged anything yet at {directory}"
    else:
        read = read_window(directory, since)
        note = (
            f"{read.frame.height} predictions since "
            f"{datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC at {directory}"
            if read.frame.height
            else f"no predictions in the last {config.window_hours:g} h at {directory}"
        )
    frame = read.frame
    version = f"{int(now.timestamp())}-{context.run_id[:8]}"
    path = f"serving_log/{version}/serving_log.parquet"
    store.write_parquet(path, frame)
    models = sorted(frame["model_tag"].unique().to_list())
    latency = latency_percentiles(frame)
    manifest = ServingLogManifest(
        version=version,
        path=path,
        since=since,
        until=now.timestamp(),
        rows=frame.height,
        model_tags=models,
        latency_ms=latency,
    )
    context.log.info(
        f"{note}; read {read.files} file(s), {read.bytes / 1e6:.1f} MB; "
        f"{read.torn} torn lines skipped"
    )
    # the model that served the newest prediction: the one serving now
    newest = latency.get(frame["model_tag"][-1], {}) if frame.height else {}
    metadata = {
        **numeric_metadata(
            {
                "dagster/row_count": frame.height,
                "predictions": frame.height,
                "torn_lines_skipped": read.torn,
                "files_read": read.files,
                "mb_read": read.bytes / 1e6,
                "window_hours": config.window_hours,
                **{f"latency_ms_{p}": newest.get(p) for p in PERCENTILES},
            }
        ),
        "note": dg.MetadataValue.text(note),
        "models": dg.MetadataValue.json(models),
        "label_counts": dg.MetadataValue.json(dict(frame.group_by("label").len().iter_rows())),
    }
    if latency:
        metadata["latency"] = dg.MetadataValue.md(latency_markdown(latency))
    return as_output(manifest, metadata)
