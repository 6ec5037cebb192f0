"""What a data check found, independent of Dagster."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    WARN = "WARN"
    ERROR = "ERROR"


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    severity: Severity  # how bad a failure is; ERROR on a blocking check stops the run
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
