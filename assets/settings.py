"""The pipeline's settings from its environment, each default declared here once: a field is the
variable TEXTOPS_<FIELD>, parsed by the parser the service's settings use
(textops_core.settings). Each is read when a step, sensor or check asks for it, in its own
process, so a run takes the environment it was launched in; a value that does not parse is
refused with a message naming its variable. docs/configuration.md's table of them is generated
from this class (`python -m orchestration.reference`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, PositiveInt

from textops_core.settings import env_field

# A positive, finite number: "no limit" is never spelled inf
FinitePositive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class PipelineSettings(BaseModel):
    """What the pipeline reads from TEXTOPS_* variables (the service's own are ServiceSettings)."""

    source: str = Field(
        "",
        description="Raw data URI when raw_texts' run config leaves `source` empty; empty: "
        "`embedded:tweeteval/hate`, TweetEval hate as shipped in the package "
        "(docs/configuration.md, below this table, lists every kind of source)",
    )
    landing: str = Field(
        "",
        description="Landing folder (or gs://bucket/prefix) watched by new_data_sensor and "
        "read by raw_texts; empty: <TEXTOPS_HOME>/landing",
    )
    cache: str = Field(
        "",
        description="Download and base-model cache (by content hash, revalidated by ETag; "
        "used, with a warning saying how old it is, when the URL is unreachable); empty: "
        "~/.cache/textops",
    )
    max_download_bytes: PositiveInt = Field(
        2 * 1024**3,
        description="Largest file an https source may download (checked against "
        "Content-Length and while streaming)",
    )
    max_rows: PositiveInt = Field(
        20_000_000,
        description="Most rows a CSV / Parquet / JSONL source or landed file may hold once "
        "decoded (a Parquet file's row count is read from its footer before any row is "
        "decoded: a few compressed kilobytes can hold millions of rows)",
    )
    download_deadline_s: FinitePositive = Field(
        3600.0,
        description="Seconds allowed for all downloads of one source read, each from "
        "resolving the host to the body's last byte, besides a 30 s timeout per read",
    )
    bigquery_max_bytes: PositiveInt = Field(
        10 * 1024**3,
        description="Largest dry-run estimate a `bigquery:SELECT …` source may have, and its "
        "maximum_bytes_billed",
    )
    landing_max_bytes: PositiveInt = Field(
        2 * 1024**3,
        description="Largest landed file read: a larger one is left unread, named in "
        "new_data_sensor's skip reason and in raw_texts' warning and metadata, and never "
        "stops the files landed beside it",
    )
    monitor_window_hours: FinitePositive = Field(
        24.0,
        description="The window of traffic monitoring reads (serving_log's window_hours when "
        "its run config leaves it 0, as the automation's runs do)",
    )
    # the automation (orchestration/automation.py), read when the code location loads
    automation: str = Field(
        "monitoring",
        description="Which automation starts switched on: `monitoring` (monitoring_automation "
        "and regression_sensor), `all` (the whole loop: those, drift_sensor, new_data_sensor, "
        "retrain_schedule), `off`, or a comma-separated list of those names; a switch flipped "
        "in the UI wins over it (live_model_sensor only records, and is always on)",
    )
    retrain_cron: str = Field(
        "0 3 * * 1",
        description="Cron of retrain_schedule (Mondays 03:00); a bad expression stops the code "
        "location with a message",
    )
    monitor_cron: str = Field(
        "0 * * * *",
        description="Cron of monitoring (serving_log then drift_report, by declarative "
        "automation); a bad expression stops the code location with a message",
    )
    retrain_config: str = Field(
        "",
        description="YAML run config used by retrain runs from the schedule and sensors (e.g. "
        "fewer epochs); empty: none",
    )
    landing_settle_s: FinitePositive = Field(
        60.0,
        description="Seconds a landed file must stay unchanged (size and modification time, or "
        "GCS generation) before new_data_sensor picks it up",
    )
    drift_cooldown_hours: FinitePositive = Field(
        24.0,
        description="drift_sensor retrains at most once per served model in this many hours "
        "(hourly reports of one drifted model do not retrain it every hour on the same data)",
    )


def setting(field: str) -> Any:
    """The pipeline setting `field`, read now: TEXTOPS_<FIELD> parsed as the field's type, unset
    or empty meaning its default; ValueError naming the variable when it does not parse."""
    return env_field(PipelineSettings, field)


def default(field: str) -> Any:
    return PipelineSettings.model_fields[field].default
