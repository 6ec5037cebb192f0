"""Experiment tracking: what each step of a Dagster run records, grouped by that run, with the
data, model and evaluation as artifacts whose lineage the tracker can draw."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class TrackingContext:
    """What ties a tracked run to Dagster: the run (its group) and the versions it worked on."""

    dagster_run_id: str
    asset: str
    code_version: str
    data_version: str | None = None  # the text_splits version
    model_version: str | None = None  # the fine_tuned_model version

    def config(self) -> dict[str, str]:
        return {
            key: value
            for key, value in {
                "dagster_run_id": self.dagster_run_id,
                "dagster_asset": self.asset,
                "code_version": self.code_version,
                "data_version": self.data_version,
                "model_version": self.model_version,
            }.items()
            if value is not None
        }


@dataclass(frozen=True)
class Files:
    """Files an artifact points at where they already are (the artifact store): no copies."""

    uris: dict[str, str]  # name in the artifact -> URI (file:// or gs://)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """An evaluation as a tracker shows it."""

    metrics: dict[str, float]
    label_names: list[str]
    y_true: list[int]
    y_pred: list[int]
    per_class: list[dict[str, Any]]  # class, precision, recall, f1, support
    predictions: list[dict[str, Any]]  # a sample: text, label, predicted, probability
    calibration: list[dict[str, Any]]  # per confidence bin, before and after scaling
    images: dict[str, bytes]  # name -> PNG


@dataclass(frozen=True)
class DecisionRecord:
    """The gate's decision about one model (or a rollback) as a tracker records it."""

    approved: bool
    summary: str
    record: dict[str, Any]
    model: Files | None  # the model judged (None for a rollback)
    champion: Files | None  # the model served after the decision, when it changed
    withdrawn: Files | None = None  # the model a rollback withdrew


class TrainingRun(ABC):
    """One training as tracked: a Lightning logger for its steps, its model at the end."""

    location: str  # where a person finds the run: a URL, or a folder of offline files

    @property
    @abstractmethod
    def logger(self) -> Any:
        """A Lightning logger (or False for none)."""

    @abstractmethod
    def log_model(self, model: Files) -> None:
        """The trained model, as an output of this run."""


class ExperimentTracker(dg.ConfigurableResource, ABC):
    """Tracking of the steps of a Dagster run: every tracked run of one Dagster run shares one
    group, and carries the versions it worked on."""

    @abstractmethod
    def log_dataset(self, context: TrackingContext, splits: Files) -> str:
        """The splits, as an artifact; returns where the run is."""

    @abstractmethod
    def training(
        self, context: TrackingContext, config: dict[str, Any], splits: Files
    ) -> AbstractContextManager[TrainingRun]:
        """A training run that used `splits`; finished when the block ends (unless it is a run
        the tracker did not start, such as a sweep's trial)."""

    @abstractmethod
    def log_evaluation(self, context: TrackingContext, model: Files, evaluation: Evaluation) -> str:
        """An evaluation of `model`; returns where the run is."""

    @abstractmethod
    def log_decision(self, context: TrackingContext, decision: DecisionRecord) -> str:
        """The gate's decision (or a rollback); returns where the run is."""


def location_metadata(location: str) -> dict[str, dg.MetadataValue]:
    """Asset metadata linking to a tracked run: its URL online, its folder offline."""
    if not location:
        return {}
    if location.startswith(("http://", "https://")):
        return {"tracking_run": dg.MetadataValue.url(location)}
    return {"tracking_run": dg.MetadataValue.path(location)}
