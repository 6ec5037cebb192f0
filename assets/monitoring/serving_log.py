"""`serving_log`: the predictions the service logged, read with polars into one frame."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.interfaces.manifests import MANIFEST_IO, ServingLogManifest, as_output
from assets.interfaces.store import ArtifactStore
from assets.locations import location
from assets.metadata import numeric_metadata
from assets.versioning import source_version
from bento.serving_log import default_log_dir

LOG_SCHEMA = {
    "ts": pl.Float64,
    "model_tag": pl.String,
    "text": pl.String,
    "text_length": pl.Int64,
    "label": pl.String,
    "latency_ms": pl.Float64,
    "probabilities": pl.String,
}


def log_files(uri: str) -> list[str]:
    """Contents of the log files at a local folder or a gs:// prefix, in name order."""
    folder = location(uri)
    if not folder.is_dir():
        return []
    return [
        path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(folder.iterdir(), key=lambda p: p.name)
        if path.name.startswith("predictions-") and path.name.endswith(".jsonl")
    ]


def read_serving_log(uri: str, since: float | None = None) -> tuple[pl.DataFrame, int]:
    """Every complete record at `uri` (newer than `since`), and the count of torn lines
    skipped (a crash while writing leaves at most one per file)."""
    rows, torn = [], 0
    for content in log_files(str(uri)):
        for line in content.split("\n"):
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            if since is not None and record["ts"] < since:
                continue
            record["probabilities"] = json.dumps(record.get("probabilities", {}))
            record.setdefault("text", None)
            rows.append({key: record.get(key) for key in LOG_SCHEMA})
    return pl.DataFrame(rows, schema=LOG_SCHEMA, orient="row"), torn


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
    description="Predictions the service logged in the last window_hours, as one parquet.",
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
        frame, torn = pl.DataFrame(schema=LOG_SCHEMA), 0
        note = "the service's prediction log is off (TEXTOPS_SERVING_LOG=off)"
    elif not location(directory).is_dir():
        frame, torn = pl.DataFrame(schema=LOG_SCHEMA), 0
        note = f"the service has not logged anything yet at {directory}"
    else:
        frame, torn = read_serving_log(directory, since)
        note = (
            f"{frame.height} predictions since {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} "
            f"UTC at {directory}"
            if frame.height
            else f"no predictions in the last {config.window_hours:g} h at {directory}"
        )
    version = f"{int(now.timestamp())}-{context.run_id[:8]}"
    path = f"serving_log/{version}/serving_log.parquet"
    store.write_parquet(path, frame)
    models = sorted(frame["model_tag"].unique().to_list())
    manifest = ServingLogManifest(
        version=version,
        path=path,
        since=since,
        until=now.timestamp(),
        rows=frame.height,
        model_tags=models,
    )
    context.log.info(f"{note}; {torn} torn lines skipped")
    return as_output(
        manifest,
        {
            **numeric_metadata(
                {
                    "dagster/row_count": frame.height,
                    "predictions": frame.height,
                    "torn_lines_skipped": torn,
                    "latency_ms_p50": frame["latency_ms"].median(),
                    "window_hours": config.window_hours,
                }
            ),
            "note": dg.MetadataValue.text(note),
            "models": dg.MetadataValue.json(models),
            "label_counts": dg.MetadataValue.json(dict(frame.group_by("label").len().iter_rows())),
        },
    )
