"""The artifact store on the local disk (the default deployment)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from pydantic import Field

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.store import ArtifactStore, default_home


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

    def children(self, key: str) -> list[str]:
        path = self._path(key)
        return sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
