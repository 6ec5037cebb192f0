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
    """Approved models with their lineage labels; the newest approved one is the champion.

    A model goes in in two steps: `publish` writes it whole and verified but not served (slow:
    the files are copied and checked), and `approve` makes it the champion in one atomic label
    change (fast), so the lock that serializes decisions is held for moments, not for a copy.
    Readers never wait for the lock and skip entries they cannot read."""

    @abstractmethod
    def location(self) -> str:
        """Where the registry is, in words a person can act on (a path, a URL)."""

    @abstractmethod
    def approved(self) -> list[RegisteredModel]:
        """Approved models whose files are intact, newest first."""

    def champion(self) -> RegisteredModel | None:
        """The newest approved model, or None."""
        approved = self.approved()
        return approved[0] if approved else None

    @abstractmethod
    def problems(self, tag: str) -> list[str]:
        """What is wrong with a stored model's files (missing, other sizes, no checksums to
        verify them by); empty when they are intact. `approved()` skips a model with any."""

    @abstractmethod
    def get(self, tag: str) -> RegisteredModel:
        """The model with this tag; MissingArtifactError when there is none."""

    @abstractmethod
    def publish(self, model_dir: Path, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Write a model folder with its lineage labels, complete and verified, but not
        approved yet; returns its tag."""

    @abstractmethod
    def approve(self, tag: str) -> None:
        """Make a published model the newest approved one (one atomic change)."""

    @abstractmethod
    def discard(self, tag: str) -> None:
        """Remove a published model that was never approved."""

    @abstractmethod
    def withdraw(self, tag: str, reason: str, by: str) -> RegisteredModel:
        """Take a model out of service (no longer approved; labels say who, why, when)."""

    @abstractmethod
    def exclusive(self) -> AbstractContextManager[float]:
        """Holds the registry for one decision (yields the seconds spent waiting for it): other
        runs' approvals and rollbacks wait until it is released, so two gates never approve
        against the same champion at once. Gives up with an error after a timeout."""
