"""Which model the service serves: the newest model labelled approved in the BentoML store.

Shared by the pipeline (to find the champion, to register) and the service; depends on bentoml
and filelock only.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import bentoml

MODEL_NAME = "textops-classifier"
PINNED_TAG_ENV = "TEXTOPS_MODEL_TAG"


class NoApprovedModelError(LookupError):
    """The BentoML store holds no approved textops model."""


def store_lock(name: str = MODEL_NAME):
    """An inter-process lock on the model `name` in the BentoML store. BentoML writes a new
    model in place and rewrites the name's `latest` file; under this lock, concurrent runs and
    the service never read a model that is half-written. Reentrant in one thread."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from filelock import FileLock

    folder = Path(BentoMLContainer.bentoml_home.get()) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f".{name}.lock", is_singleton=True)


def approved_models(name: str = MODEL_NAME) -> list[bentoml.Model]:
    """Approved models, newest first (by creation time, never by the `latest` alias)."""
    with store_lock(name):
        try:
            stored = bentoml.models.list(name)
        except bentoml.exceptions.NotFound:
            return []
    models = [m for m in stored if m.info.labels.get("approved") == "true"]
    return sorted(models, key=lambda m: m.info.creation_time, reverse=True)


def latest_approved(name: str = MODEL_NAME) -> bentoml.Model | None:
    models = approved_models(name)
    return models[0] if models else None


def withdraw(tag: str, reason: str, by: str, name: str = MODEL_NAME) -> dict[str, str]:
    """Take an approved model out of service: its labels say it is withdrawn, why, by whom and
    when, and it is no longer approved, so the previous approved model is the newest again.
    Returns the new labels. The model itself stays in the store."""
    import yaml

    with store_lock(name):
        model = bentoml.models.get(tag)
        info_file = Path(model.path) / "model.yaml"
        info = yaml.safe_load(info_file.read_text())
        info["labels"] = {
            **info.get("labels", {}),
            "approved": "false",
            "withdrawn": "true",
            "withdrawn_reason": reason,
            "withdrawn_by": by,
            "withdrawn_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        staged = info_file.with_name(f".{info_file.name}.{os.getpid()}.tmp")
        staged.write_text(yaml.safe_dump(info, sort_keys=False))
        os.replace(staged, info_file)
        return info["labels"]


def serving_tag(name: str = MODEL_NAME) -> str:
    """$TEXTOPS_MODEL_TAG when set, else the newest approved model's tag."""
    if pinned := os.environ.get(PINNED_TAG_ENV):
        return pinned
    model = latest_approved(name)
    if model is None:
        from bentoml._internal.configuration.containers import BentoMLContainer

        raise NoApprovedModelError(
            f"no approved '{name}' model in the BentoML store "
            f"({BentoMLContainer.bentoml_home.get()}): run the pipeline until approved_model "
            f"approves one (see README), or set {PINNED_TAG_ENV} to a model tag"
        )
    return str(model.tag)
