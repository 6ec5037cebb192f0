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
    the environment at start, each field from TEXTOPS_<FIELD> (docs/configuration.md)."""

    model_config = ConfigDict(frozen=True)

    model_tag: str = Field("", description="Serve this model tag, and only it (no following)")
    follow: bool | None = Field(
        None,
        description="Follow the registry's champion; unset: on, but in a built image only with "
        "follow_store",
    )
    follow_store: str = Field("", description="The BentoML models folder to follow")
    follow_interval_s: PositiveFloat = Field(10.0, description="How often the leader reads it")
    rollout_poll_s: PositiveFloat = Field(1.0, description="How often a worker reads the state")
    deployment: str = Field("default", description="The deployment's name (its rollout folder)")
    rollout_dir: str = Field("", description="The rollout folder; empty: under BENTOML_HOME")
    shadow_requests: NonNegativeInt = Field(500, description="Shadowed requests (0: no shadow)")
    shadow_minutes: PositiveFloat = Field(10.0, description="...or minutes, whichever first")
    shadow_max_error_rate: Share = Field(0.01, description="Largest error share of a shadow")
    shadow_max_p95_ratio: PositiveFloat = Field(
        2.0, description="Largest p95 of a shadow against the live model's"
    )
    shadow_max_label_shift: Share = Field(
        0.3, description="Largest total variation of a shadow's label mix from its evaluation's"
    )
    probation_hours: PositiveFloat = Field(2.0, description="Hours a new live model is watched")
    latency_slo_ms: PositiveFloat = Field(300.0, description="Request p95 objective (ms)")
    probation_min_requests: PositiveInt = Field(50, description="Requests before it is judged")
    serving_log_text: bool = Field(True, description="Log the texts (off: lengths, labels only)")
    serving_log_max_age_days: PositiveFloat = Field(30.0, description="Log files kept this long")
    serving_log_max_mb: PositiveFloat = Field(10240.0, description="...within this size")
    variant: Literal["", "onnx-int8", "onnx-fp32", "pytorch"] = Field(
        "", description="Serve this variant; empty: the fastest that passed parity, timed here"
    )
    workers: NonNegativeInt = Field(0, description="Service processes (0: one per core)")
    threads: NonNegativeInt = Field(0, description="Inference threads a process (0: shared out)")
    micro_batch: PositiveInt = Field(32, description="Texts per length-sorted micro-batch")
    max_batch_size: PositiveInt = Field(64, description="Most texts run together")
    batching: Literal["greedy", "bentoml"] = Field("greedy", description="Which batcher")
    max_latency_ms: PositiveInt = Field(10_000, description="BentoML batching's max_latency_ms")
    max_queue: PositiveInt = Field(512, description="Texts waiting beyond which 429 answers")
    max_body_bytes: PositiveInt = Field(1 << 20, description="Larger bodies get 413")
    idle_timeout_s: FiniteSeconds = Field(5.0, description="A connection's wait for a request")
    header_timeout_s: FiniteSeconds = Field(10.0, description="A request's line and headers")
    access_log: bool = Field(False, description="BentoML's access log, a line per request")
    ort_spin: bool = Field(True, description="ONNX Runtime's threads spin between calls")
    runtime_check: Literal["warn", "refuse"] = Field(
        "warn", description="Other library versions than the parity check's: warn or refuse"
    )


def service_settings(environ: Mapping[str, str] | None = None) -> ServiceSettings:
    return read_environment(ServiceSettings, environ)
