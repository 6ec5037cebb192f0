"""The model registry: where approved models go, and where the service finds the one to serve."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class RegisteredModel:
    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]


class ModelRegistry(dg.ConfigurableResource, ABC):
    """Approved models with their lineage labels; the newest approved one is the champion."""

    @abstractmethod
    def approved(self) -> list[RegisteredModel]:
        """Approved models, newest first."""

    def champion(self) -> RegisteredModel | None:
        """The newest approved model, or None."""
        approved = self.approved()
        return approved[0] if approved else None

    @abstractmethod
    def get(self, tag: str) -> RegisteredModel:
        """The model with this tag; MissingArtifactError when there is none."""

    @abstractmethod
    def register(self, model_dir: Path, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Save a model folder with lineage labels; returns its tag."""

    @abstractmethod
    def withdraw(self, tag: str, reason: str, by: str) -> RegisteredModel:
        """Take a model out of service (no longer approved; labels say who, why, when)."""

    @abstractmethod
    def exclusive(self) -> AbstractContextManager[None]:
        """Holds the registry for one decision: other runs' registrations wait until it is
        released, so two gates never approve against the same champion at once."""
