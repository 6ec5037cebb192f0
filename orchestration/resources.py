"""Resources: where artifacts live. Assets see only the `ArtifactStore` interface."""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field


class ArtifactStoreError(OSError):
    """The store could not be read or written (e.g. the bucket is unreachable)."""


class MissingArtifactError(LookupError):
    """An asset reads an upstream artifact that was never materialized into this store."""


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Key/value store for artifacts. Keys are '/'-separated paths relative to the store root.

    Every write is atomic from a reader's point of view: a reader sees the previous object or the
    new one whole, never a part. Versioned artifacts are written under `<name>/<version>/` and made
    visible by `publish`, which writes the small manifest `<name>/latest.json` last.
    """

    @abstractmethod
    def uri(self, key: str) -> str:
        """A URI a person can paste (a path or gs:// URL)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def upload_dir(self, key: str, local_dir: Path) -> None:
        """Publish a local folder under `key` (a model, a tokenizer) as one unit."""

    @abstractmethod
    def local_dir(self, key: str) -> Path:
        """A local folder holding the files under `key` (a copy when the store is remote)."""

    @abstractmethod
    def working_dir(self, key: str) -> Path:
        """A local folder under `key` that outlives a crashed run (training checkpoints)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` and everything under it; a no-op when absent."""

    def write_parquet(self, key: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd")
        self.write_bytes(key, buffer.getvalue())

    def read_parquet(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self._read_existing(key)))

    def write_json(self, key: str, payload: Any) -> None:
        self.write_bytes(key, json.dumps(payload, indent=2, sort_keys=True).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self._read_existing(key))

    def publish(self, name: str, manifest: dict[str, Any]) -> None:
        """Make a version of artifact `name` the current one (its files must be written already)."""
        self.write_json(f"{name}/latest.json", manifest)

    def latest(self, name: str) -> dict[str, Any]:
        """The manifest of the current version of `name`."""
        key = f"{name}/latest.json"
        if not self.exists(key):
            raise MissingArtifactError(
                f"no '{name}' in the artifact store at {self.uri('')}: materialize {name} first"
            )
        return self.read_json(key)

    def _read_existing(self, key: str) -> bytes:
        if not self.exists(key):
            raise MissingArtifactError(f"artifact {self.uri(key)} does not exist")
        return self.read_bytes(key)


def default_home() -> str:
    """TEXTOPS_HOME, else a folder inside DAGSTER_HOME, else ~/.textops."""
    if home := os.environ.get("TEXTOPS_HOME"):
        return home
    if dagster_home := os.environ.get("DAGSTER_HOME"):
        return str(Path(dagster_home) / "textops")
    return str(Path.home() / ".textops")


class LocalArtifactStore(ArtifactStore):
    """Artifacts in a local folder; atomic through write-to-temp and rename."""

    root: str = Field(default_factory=default_home, description="Folder holding every artifact")

    def _path(self, key: str) -> Path:
        root = Path(self.root).expanduser().resolve()
        path = (root / key).resolve()
        if path != root and root not in path.parents:
            raise ValueError(f"artifact key {key!r} escapes the store root {root}")
        return path

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def upload_dir(self, key: str, local_dir: Path) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        retired = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
        try:
            shutil.copytree(local_dir, staging)
            if path.exists():
                os.rename(path, retired)
            os.rename(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(retired, ignore_errors=True)

    def local_dir(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_dir():
            raise MissingArtifactError(f"artifact folder {path} does not exist")
        return path

    def working_dir(self, key: str) -> Path:
        path = self._path(key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def cache_dir() -> Path:
    """Local cache for downloads and base models (never holds results)."""
    return Path(os.environ.get("TEXTOPS_CACHE", Path.home() / ".cache" / "textops")).expanduser()


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


class WandbTracker(ExperimentTracker):
    """Weights & Biases: offline files by default (sync later with `wandb sync <dir>`), online
    when WANDB_API_KEY is set; WANDB_MODE (e.g. `disabled`) overrides both."""

    project: str = Field("textops", description="W&B project")
    entity: str = Field("", description="W&B entity (team or user); empty: the key's default")
    mode: str = Field("", description="online, offline or disabled; empty: from the environment")
    dir: str = Field("", description="Folder for W&B files; empty: <TEXTOPS_HOME>/wandb")

    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        if env_mode := os.environ.get("WANDB_MODE"):
            return env_mode
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"

    def _dir(self) -> str:
        folder = Path(self.dir or Path(default_home()) / "wandb").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def lightning_logger(self, name: str, config: dict[str, Any]) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(
            project=self.project,
            entity=self.entity or None,
            name=name,
            save_dir=self._dir(),
            mode=self.resolved_mode(),
            job_type="train",
        )
        logger.log_hyperparams(config)
        return logger

    def finish(self) -> None:
        import wandb

        if wandb.run is not None:
            wandb.finish()

    def log_report(self, name: str, metrics: dict[str, float], images: dict[str, Path]) -> None:
        import wandb

        run = wandb.init(
            project=self.project,
            entity=self.entity or None,
            name=name,
            dir=self._dir(),
            mode=self.resolved_mode(),
            job_type="evaluation",
            reinit="finish_previous",
        )
        run.summary.update(metrics)
        run.log({key: wandb.Image(str(path)) for key, path in images.items()})
        run.finish()


@dataclass(frozen=True)
class RegisteredModel:
    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]


class ModelRegistry(dg.ConfigurableResource, ABC):
    """Where approved models go, and where the service finds the one to serve."""

    @abstractmethod
    def champion(self) -> RegisteredModel | None:
        """The newest approved model, or None."""

    @abstractmethod
    def register(self, model_dir: Path, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Save a model folder with lineage labels; returns its tag."""


class BentoModelStore(ModelRegistry):
    """The BentoML model store under $BENTOML_HOME (default ~/bentoml)."""

    model_name: str = Field("textops-classifier", description="BentoML model name")

    def champion(self) -> RegisteredModel | None:
        from bento.registry import latest_approved

        model = latest_approved(self.model_name)
        if model is None:
            return None
        return RegisteredModel(
            str(model.tag), Path(model.path), dict(model.info.labels), dict(model.info.metadata)
        )

    def register(self, model_dir: Path, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        import bentoml

        with bentoml.models.create(self.model_name, labels=labels, metadata=metadata) as model:
            shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
        return str(model.tag)
