"""`serving_log`: the predictions the service logged in a time window, as one parquet, with each
model's request latency percentiles (reading: `log_window`).

The copy holds no texts: they stay in the service's log, under its owner-only permissions and
its retention, and drift_report reads them from there. Copies older than `keep_hours` are
deleted when the next one is written, so the store holds a bounded number of them."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.interfaces.manifests import MANIFEST_IO, ServingLogManifest, as_output
from assets.interfaces.store import ArtifactStore
from assets.locations import location
from assets.metadata import markdown_table, numeric_metadata
from assets.monitoring.log_window import (
    LOG_SCHEMA,
    PERCENTILES,
    WindowRead,
    latency_percentiles,
    read_window,
)
from assets.retries import NETWORK_RETRY, failing_at_once_on_bad_input
from assets.settings import setting
from assets.versioning import run_version, source_version
from textops_core.serving_log import default_log_dir


def monitoring_freshness(window_hours: float) -> dg.FreshnessPolicy:
    """Monitoring is stale once its last run is older than the window it reads: predictions
    served since then have gone unread by the drift checks. Dagster's floor is a minute for
    the warning (half the window) and two for the failure (a simulated day may be shorter)."""
    fail = max(timedelta(hours=window_hours), timedelta(minutes=2))
    return dg.FreshnessPolicy.time_window(
        fail_window=fail, warn_window=max(fail / 2, timedelta(minutes=1))
    )


MONITORING_FRESHNESS = monitoring_freshness(setting("monitor_window_hours"))


def delete_old_copies(store: ArtifactStore, before: float, keep: str) -> int:
    """Deletes the earlier copies of the window written before `before` (epoch seconds, the
    first part of their version); returns how many."""
    deleted = 0
    for version in store.children("serving_log"):
        written = version.split("-", 1)[0]
        if version != keep and written.isdigit() and int(written) < before:
            store.delete(f"serving_log/{version}")
            deleted += 1
    return deleted


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
    window_hours: float = Field(
        0.0,
        ge=0,
        description="Keep predictions this recent; 0: $TEXTOPS_MONITOR_WINDOW_HOURS, else 24 "
        "(monitoring that runs by itself takes no run config)",
    )
    keep_hours: float = Field(
        48.0,
        gt=0,
        description="Earlier copies of the window older than this are deleted from the store",
    )


def read_served(directory: str, since: float, window_hours: float) -> tuple[WindowRead, str]:
    """The window of the log at `directory`, with a sentence saying what it held. Before any
    traffic the log is empty, not missing: a fresh deployment materializes it."""
    if not directory:
        empty = WindowRead(pl.DataFrame(schema=LOG_SCHEMA), 0, 0, 0)
        return empty, "the service's prediction log is off (TEXTOPS_SERVING_LOG=off)"
    if not location(directory).is_dir():
        empty = WindowRead(pl.DataFrame(schema=LOG_SCHEMA), 0, 0, 0)
        return empty, f"the service has not logged anything yet at {directory}"
    read = read_window(directory, since)
    note = (
        f"{read.frame.height} predictions since "
        f"{datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC at {directory}"
        if read.frame.height
        else f"no predictions in the last {window_hours:g} h at {directory}"
    )
    return read, note


def log_metadata(read: WindowRead, note: str, window_hours: float, latency: dict) -> dict:
    """What the UI shows of the window: counts, the serving model's latency, the note."""
    frame = read.frame
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
                "window_hours": window_hours,
                **{f"latency_ms_{p}": newest.get(p) for p in PERCENTILES},
            }
        ),
        "note": dg.MetadataValue.text(note),
        "models": dg.MetadataValue.json(sorted(frame["model_tag"].unique().to_list())),
        "label_counts": dg.MetadataValue.json(dict(frame.group_by("label").len().iter_rows())),
    }
    if latency:
        metadata["latency"] = dg.MetadataValue.md(latency_markdown(latency))
    return metadata


@dg.asset(
    group_name="monitoring",
    kinds={"polars", "parquet"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Predictions the service logged in the last window_hours, as one parquet, with "
    "each model's request latency percentiles.",
    retry_policy=NETWORK_RETRY,
    freshness_policy=MONITORING_FRESHNESS,
)
@failing_at_once_on_bad_input
def serving_log(
    context: dg.AssetExecutionContext, config: ServingLogConfig, store: ArtifactStore
) -> dg.Output[ServingLogManifest]:
    default = default_log_dir()
    directory = config.log_dir or (str(default) if default else "")
    now = datetime.now(UTC)
    window_hours = config.window_hours or setting("monitor_window_hours")
    since = (now - timedelta(hours=window_hours)).timestamp()
    read, note = read_served(directory, since, window_hours)
    version = run_version(str(int(now.timestamp())), context.run_id)
    path = f"serving_log/{version}/serving_log.parquet"
    store.write_parquet(path, read.frame.drop("text"))
    deleted = delete_old_copies(store, now.timestamp() - config.keep_hours * 3600, version)
    latency = latency_percentiles(read.frame)
    manifest = ServingLogManifest(
        version=version,
        path=path,
        since=since,
        until=now.timestamp(),
        rows=read.frame.height,
        log_dir=directory,
        model_tags=sorted(read.frame["model_tag"].unique().to_list()),
        latency_ms=latency,
    )
    context.log.info(
        f"{note}; read {read.files} file(s), {read.bytes / 1e6:.1f} MB; "
        f"{read.torn} torn lines skipped; {deleted} copies older than {config.keep_hours:g} h "
        "deleted"
    )
    return as_output(manifest, log_metadata(read, note, window_hours, latency))
