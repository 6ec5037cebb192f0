"""`serving_log`: the predictions the service logged, read with polars into one frame."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from assets.numbers import numeric_metadata
from bento.serving_log import default_log_dir
from orchestration.resources import ArtifactStore

LOG_SCHEMA = {
    "ts": pl.Float64,
    "model_tag": pl.String,
    "text": pl.String,
    "text_length": pl.Int64,
    "label": pl.String,
    "latency_ms": pl.Float64,
    "probabilities": pl.String,
}


def log_files(location: str | Path) -> list[str]:
    """Contents of the log files at a local folder or a gs:// prefix, in name order."""
    location = str(location)
    if location.startswith("gs://"):
        from assets.sources import gcs_client, split_gcs_uri

        bucket, prefix = split_gcs_uri(location)
        blobs = gcs_client().list_blobs(bucket, prefix=f"{prefix}/" if prefix else None)
        return [
            blob.download_as_bytes().decode("utf-8", errors="replace")
            for blob in sorted(blobs, key=lambda b: b.name)
            if blob.name.rsplit("/", 1)[-1].startswith("predictions-")
            and blob.name.endswith(".jsonl")
        ]
    return [
        path.read_text(encoding="utf-8", errors="replace")
        for path in sorted(Path(location).glob("predictions-*.jsonl"))
    ]


def read_serving_log(location: str | Path, since: float | None = None) -> tuple[pl.DataFrame, int]:
    """Every complete record at `location` (newer than `since`), and the count of torn lines
    skipped (a crash while writing leaves at most one per file)."""
    rows, torn = [], 0
    for content in log_files(location):
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
        description="Folder of the service's log; empty: "
        "$TEXTOPS_SERVING_LOG, else <TEXTOPS_HOME>/serving_log",
    )
    window_hours: float = Field(24.0, gt=0, description="Keep predictions this recent")


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "parquet"},
    description="Predictions the service logged in the last window_hours, as one parquet.",
)
def serving_log(
    context: dg.AssetExecutionContext, config: ServingLogConfig, store: ArtifactStore
) -> dg.MaterializeResult:
    directory = Path(config.log_dir).expanduser() if config.log_dir else default_log_dir()
    if directory is None or not directory.is_dir():
        raise FileNotFoundError(
            f"no serving log at {directory}: serve the model first, or set log_dir / "
            "TEXTOPS_SERVING_LOG to the folder the service writes to"
        )
    now = datetime.now(UTC)
    since = (now - timedelta(hours=config.window_hours)).timestamp()
    frame, torn = read_serving_log(directory, since)
    if frame.height == 0:
        raise ValueError(
            f"the serving log at {directory} has no predictions in the last "
            f"{config.window_hours:g} h"
        )
    version = f"{int(now.timestamp())}"
    path = f"serving_log/{version}/serving_log.parquet"
    store.write_parquet(path, frame)
    store.publish(
        "serving_log", {"version": version, "path": path, "since": since, "until": now.timestamp()}
    )
    context.log.info(f"{frame.height} predictions since {since:.0f}; {torn} torn lines skipped")
    return dg.MaterializeResult(
        metadata={
            **numeric_metadata(
                {
                    "predictions": frame.height,
                    "torn_lines_skipped": torn,
                    "latency_ms_p50": frame["latency_ms"].median(),
                    "window_hours": config.window_hours,
                }
            ),
            "models": dg.MetadataValue.json(sorted(frame["model_tag"].unique().to_list())),
            "label_counts": dg.MetadataValue.json(dict(frame.group_by("label").len().iter_rows())),
        }
    )
