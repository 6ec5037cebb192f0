"""The artifact store: bytes under '/'-separated keys. It keeps artifacts; Dagster keeps which
version is whose (see `manifests`)."""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from assets.interfaces.errors import MissingArtifactError
from assets.settings import setting
from textops_core.settings import textops_home


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Key/value store for artifacts. Keys are '/'-separated paths relative to the store root.

    Every write is atomic from a reader's point of view: a reader sees the previous object or the
    new one whole, never a part. Assets write each version under its own `<name>/<version>/`, so
    nothing a finished run saved is ever overwritten by another.
    """

    @abstractmethod
    def uri(self, key: str) -> str:
        """A URI a person can paste (a path or gs:// URL)."""

    def reference_uri(self, key: str) -> str:
        """A URI other tools can point at (file:// or gs://): how tracked artifacts reference
        the store's files instead of copying them."""
        uri = self.uri(key)
        return uri if "://" in uri else Path(uri).as_uri()

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

    @abstractmethod
    def children(self, key: str) -> list[str]:
        """The names directly under `key` (files and folders), sorted; empty when absent."""

    def write_parquet(self, key: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd")
        self.write_bytes(key, buffer.getvalue())

    def read_parquet(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read_existing(key)))

    def write_json(self, key: str, payload: Any) -> None:
        self.write_bytes(key, json.dumps(payload, indent=2, sort_keys=True).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_existing(key))

    def read_existing(self, key: str) -> bytes:
        if not self.exists(key):
            raise MissingArtifactError(f"artifact {self.uri(key)} does not exist")
        return self.read_bytes(key)


def default_home() -> str:
    """TEXTOPS_HOME, else a folder inside DAGSTER_HOME, else ~/.textops (textops_home)."""
    return textops_home()


def cache_dir() -> Path:
    """Local cache for downloads and base models (never holds results)."""
    return Path(setting("cache") or Path.home() / ".cache" / "textops").expanduser()
