"""The BentoML model store as the model registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from textops_core.registry import MODEL_NAME


class BentoModelStore(ModelRegistry):
    """The BentoML model store under $BENTOML_HOME (default ~/bentoml), written as
    textops_core/registry.py describes: staged, verified, moved in, then approved by one label
    flip."""

    model_name: str = Field(MODEL_NAME, description="BentoML model name")

    def location(self) -> str:
        from textops_core.registry import bentoml_home

        return f"the BentoML model store at {bentoml_home()} (BENTOML_HOME)"

    def approved(self) -> list[RegisteredModel]:
        from textops_core.registry import approved_models

        return [_registered(model) for model in approved_models(self.model_name)]

    def problems(self, tag: str) -> list[str]:
        from textops_core.registry import integrity_problems

        return integrity_problems(self.get(tag).path)

    def get(self, tag: str) -> RegisteredModel:
        import bentoml

        try:
            return _registered(bentoml.models.get(tag))
        except bentoml.exceptions.NotFound:
            raise MissingArtifactError(
                f"model {tag} is not in {self.location()}; point BENTOML_HOME at the store "
                "that holds it (the one the service and earlier runs used)"
            ) from None
        except bentoml.exceptions.BentoMLException as error:
            raise MissingArtifactError(
                f"model {tag} in {self.location()} cannot be read: {error}"
            ) from None

    def publish(self, model_dir: Path, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        from textops_core.registry import publish_pending

        return publish_pending(model_dir, labels, metadata, self.model_name)

    def approve(self, tag: str) -> None:
        from textops_core.registry import approve

        approve(tag, self.model_name)

    def discard(self, tag: str) -> None:
        from textops_core.registry import discard

        discard(tag)

    def withdraw(self, tag: str, reason: str, by: str) -> RegisteredModel:
        from textops_core.registry import withdraw

        withdraw(tag, reason, by, self.model_name)
        return self.get(tag)

    @contextmanager
    def exclusive(self) -> Iterator[float]:
        from textops_core.registry import store_lock

        with store_lock(self.model_name) as waited_s:
            yield waited_s


def _registered(model) -> RegisteredModel:
    return RegisteredModel(
        str(model.tag), Path(model.path), dict(model.info.labels), dict(model.info.metadata)
    )
