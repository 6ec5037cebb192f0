"""The BentoML model store as the model registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from bento.registry import MODEL_NAME


class BentoModelStore(ModelRegistry):
    """The BentoML model store under $BENTOML_HOME (default ~/bentoml). Registrations and
    champion lookups hold the store's lock (bento.registry.store_lock), so concurrent runs
    never see a model half-written."""

    model_name: str = Field(MODEL_NAME, description="BentoML model name")

    def approved(self) -> list[RegisteredModel]:
        from bento.registry import approved_models

        return [_registered(model) for model in approved_models(self.model_name)]

    def get(self, tag: str) -> RegisteredModel:
        import bentoml

        from bento.registry import store_lock

        try:
            with store_lock(self.model_name):
                return _registered(bentoml.models.get(tag))
        except bentoml.exceptions.NotFound:
            raise MissingArtifactError(
                f"model {tag} is not in the BentoML model store (BENTOML_HOME); it served the "
                "logged predictions, so the store the service used is the one to point at"
            ) from None

    def register(self, model_dir: Path, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        import bentoml

        from bento.registry import store_lock

        with (
            store_lock(self.model_name),
            bentoml.models.create(self.model_name, labels=labels, metadata=metadata) as model,
        ):
            shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
        return str(model.tag)

    def withdraw(self, tag: str, reason: str, by: str) -> RegisteredModel:
        from bento.registry import withdraw

        withdraw(tag, reason, by, self.model_name)
        return self.get(tag)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        from bento.registry import store_lock

        with store_lock(self.model_name):
            yield


def _registered(model) -> RegisteredModel:
    return RegisteredModel(
        str(model.tag), Path(model.path), dict(model.info.labels), dict(model.info.metadata)
    )
