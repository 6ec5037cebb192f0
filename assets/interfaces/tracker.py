"""Experiment tracking for training runs and evaluation reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import dagster as dg


class ExperimentTracker(dg.ConfigurableResource, ABC):
    """Experiment tracking for training runs and evaluation reports."""

    @abstractmethod
    def lightning_logger(self, name: str, config: dict[str, Any]) -> Any:
        """A Lightning logger for one training run (or False for none)."""

    @abstractmethod
    def finish(self) -> None:
        """Close the current tracking run, if any."""

    @abstractmethod
    def log_report(self, name: str, metrics: dict[str, float], images: dict[str, Path]) -> None:
        """Record an evaluation report's numbers and plots as their own run."""
