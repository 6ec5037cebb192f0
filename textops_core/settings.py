"""Settings read from the environment, each refused with a message naming its variable: the
service's all at once (ServiceSettings), the pipeline's one at a time (env_int and the others)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)

M = TypeVar("M", bound=BaseModel)


def textops_home() -> str:
    """Where textops keeps its files: TEXTOPS_HOME, else a folder inside DAGSTER_HOME, else
    ~/.textops (the pipeline's artifact store, and the service's log beside it)."""
    if home := os.environ.get("TEXTOPS_HOME"):
        return home
    if dagster_home := os.environ.get("DAGSTER_HOME"):
        return os.path.join(dagster_home, "textops")
    return os.path.join(os.path.expanduser("~"), ".textops")


def env_value(name: str, annotation, default):
    """One variable, parsed as `annotation` by pydantic (the parser of ServiceSettings too);
    unset or empty: `default`. A value that does not parse is refused naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return TypeAdapter(annotation).validate_python(raw)
    except ValidationError as error:
        raise ValueError(f"{name}={raw!r}: {error.errors()[0]['msg']}") from None


def env_int(name: str, default: int, minimum: int = 1) -> int:
    return env_value(name, Annotated[int, Field(ge=minimum)], default)


def env_positive_float(name: str, default: float) -> float:
    return env_value(name, PositiveFloat, default)


def env_wait_seconds(name: str, default: float) -> float:
    """How long to wait: a finite number of seconds of at least 0 (0: try once, never wait)."""
    return env_value(name, Annotated[float, Field(ge=0, allow_inf_nan=False)], default)


PREFIX = "TEXTOPS_"


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return PREFIX + field.upper()


def read_environment(model: type[M], environ: Mapping[str, str] | None = None) -> M:
    """`model` (a pydantic model of settings) from the environment, parsed by pydantic: each field
    from the variable TEXTOPS_<FIELD>, unset or empty meaning its default. A value that does not
    parse is refused with a message naming its variable."""
    environ = os.environ if environ is None else environ
    given = {
        name: environ[variable(name)].strip()
        for name in model.model_fields
        if environ.get(variable(name), "").strip()
    }
    try:
        return model.model_validate(given)
    except ValidationError as error:
        problems = [
            f"{variable(str(e['loc'][0]))}={given.get(str(e['loc'][0]))!r}: {e['msg']}"
            for e in error.errors()
        ]
        raise ValueError("; ".join(problems)) from None


FiniteSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1)]


class ServiceSettings(BaseModel):
    """Every setting of the service (`bentoml serve`, the container), with its default: read from
    the environment once, as the service starts, each field from TEXTOPS_<FIELD>. The table of
    them in docs/configuration.md is made from these fields (python -m orchestration.reference)."""

    model_config = ConfigDict(frozen=True)

    model_tag: str = Field(
        "", description="Serve this model tag and only it (no following); empty: the champion"
    )
    follow: bool | None = Field(
        None,
        description="Whether the service follows the registry's champion (docs/serving.md, "
        "Following the registry); unset: on, but off in a built image unless follow_store is "
        "set",
    )
    follow_store: str = Field(
        "",
        description="The BentoML models folder the service follows: a mounted volume holding "
        "textops-classifier/; empty: the service's own BentoML store",
    )
    follow_interval_s: PositiveFloat = Field(
        10.0, description="How often the deciding worker reads the registry (seconds)"
    )
    rollout_poll_s: PositiveFloat = Field(
        1.0, description="How often every worker reads the rollout state (seconds)"
    )
    deployment: str = Field(
        "default",
        description="The deployment's name: replicas that share its rollout folder follow as "
        "one, and the code location's sensors read it",
    )
    rollout_dir: str = Field(
        "",
        description="The rollout folder (state, history, workers' reports); empty: "
        "$BENTOML_HOME/textops-rollout/<deployment>",
    )
    shadow_requests: NonNegativeInt = Field(
        500,
        description="A new champion's shadow ends after this many shadowed requests (0: no "
        "shadow)...",
    )
    shadow_minutes: PositiveFloat = Field(
        10.0, description="...or after this many minutes, whichever comes first"
    )
    shadow_max_error_rate: Share = Field(
        0.01, description="A shadow is promoted only when its errors stay within this share..."
    )
    shadow_max_p95_ratio: PositiveFloat = Field(
        2.0,
        description="...its p95 inference time within this multiple of the live model's on the "
        "same requests...",
    )
    shadow_max_label_shift: Share = Field(
        0.3,
        description="...and its label mix within this total variation distance of its own "
        "evaluation's",
    )
    probation_hours: PositiveFloat = Field(
        2.0,
        description="In its first hours live, a new model with errors over "
        "shadow_max_error_rate or a request p95 over latency_slo_ms is recorded as a regression, "
        "which regression_sensor rolls back",
    )
    latency_slo_ms: PositiveFloat = Field(
        300.0, description="Objective for a live model's request p95 (ms) during probation"
    )
    probation_min_requests: PositiveInt = Field(
        50, description="Requests before a model on probation is judged"
    )
    serving_log_text: bool = Field(
        True,
        description="Log the texts; off keeps them out (lengths, labels, probabilities, latency "
        "still logged). Texts are what your users wrote: personal data (docs/operations.md)",
    )
    serving_log_max_age_days: PositiveFloat = Field(
        30.0, description="The service deletes log files older than this..."
    )
    serving_log_max_mb: PositiveFloat = Field(
        10240.0, description="...and then the oldest while the log folder holds more than this"
    )
    variant: Literal["", "onnx-int8", "onnx-fp32", "pytorch"] = Field(
        "",
        description="Serve this variant; empty: the fastest, timed on this machine when the "
        "model loads, of those that passed parity at approval (serving.json in the model)",
    )
    workers: NonNegativeInt = Field(
        0,
        description="Service processes, each with its own copy of the model (0: one per "
        "physical core; the GPU image sets 1). In a container with a CPU limit, set the limit",
    )
    threads: NonNegativeInt = Field(
        0,
        description="Inference threads per process (0: the physical cores shared among the "
        "processes, at least 1)",
    )
    micro_batch: PositiveInt = Field(
        32,
        description="Most texts per length-sorted micro-batch (one also ends where padding "
        "would pass a fifth)",
    )
    max_batch_size: PositiveInt = Field(64, description="Most texts the batcher runs together")
    max_queue: PositiveInt = Field(
        512,
        description="Texts waiting beyond which requests get 429 at once (raise it with the "
        "machine's speed)",
    )
    max_body_bytes: PositiveInt = Field(
        1 << 20, description="Request bodies over this get 413 before they are parsed"
    )
    idle_timeout_s: FiniteSeconds = Field(
        5.0,
        description="Seconds a connection may wait for a request, fresh or kept alive after an "
        "answer; then the service closes it",
    )
    header_timeout_s: FiniteSeconds = Field(
        10.0,
        description="Seconds a request's line and headers may take from its first byte; a "
        "slower request gets 408 and its connection is closed",
    )
    access_log: bool = Field(
        False,
        description="BentoML's access log, a line per request (it costs throughput; the "
        "prediction log keeps what monitoring needs)",
    )
    ort_spin: bool = Field(
        True,
        description="ONNX Runtime's threads spin between calls; off: they sleep (less CPU when "
        "idle, slower under load)",
    )
    runtime_check: Literal["warn", "refuse"] = Field(
        "warn",
        description="What the service does when onnxruntime, torch, transformers, tokenizers "
        "or numpy differ from the versions the served model's parity check ran under "
        "(serving.json's runtime): warn logs the difference, refuse stops the service",
    )


def env_field(model: type[BaseModel], field: str):
    """One field of a settings class read now: TEXTOPS_<FIELD> parsed as the field's type, unset
    or empty meaning the field's default; ValueError naming the variable when it does not
    parse."""
    info = model.model_fields[field]
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return env_value(variable(field), annotation, info.default)


def service_settings(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    return read_environment(ServiceSettings, environ)
