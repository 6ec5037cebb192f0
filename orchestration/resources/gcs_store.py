"""The artifact store on Google Cloud Storage (the `gcp` extra), through the same storage layer
as the sources, landing and the serving log: universal-pathlib over gcsfs (assets/locations.py)."""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field
from upath import UPath

from assets.interfaces.errors import ArtifactStoreError, MissingArtifactError
from assets.interfaces.store import ArtifactStore, cache_dir
from assets.locations import google_credentials, location


class GcsArtifactStore(ArtifactStore):
    """Artifacts in a GCS bucket. An object becomes visible only when its upload completes, and
    an asset's manifest is written after its artifacts, so a failed run leaves nothing a later
    step would take for complete. gcsfs retries transient errors (5xx, 429, dropped
    connections) six times with exponential backoff before an operation fails."""

    bucket: str = Field(description="Bucket name")
    prefix: str = Field("textops", description="Key prefix inside the bucket")

    @contextmanager
    def _failing_clearly(self, action: str, key: str) -> Iterator[None]:
        from aiohttp import ClientError
        from gcsfs.retry import HttpError

        try:
            with google_credentials(self.uri(key)):
                yield
        except FileNotFoundError:
            raise
        except (OSError, ClientError, HttpError) as error:
            raise ArtifactStoreError(
                f"GCS {action} of {self.uri(key)} failed: {type(error).__name__}: "
                f"{str(error)[:300]}. Nothing was made current by this step; rerun it when "
                "the bucket is reachable"
            ) from error

    def _name(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if ".." in parts:
            raise ValueError(f"artifact key {key!r} escapes the store prefix")
        return "/".join([p for p in self.prefix.split("/") if p] + parts)

    def _at(self, key: str) -> UPath:
        return location(self.uri(key))

    def _files(self, key: str) -> dict[str, int]:
        """Every object under the folder `key`: its path below `key`, and its size."""
        folder = self._at(key)
        prefix = folder.path.rstrip("/") + "/"
        found = folder.fs.find(prefix, detail=True)
        return {
            name[len(prefix) :]: int(info.get("size") or 0)
            for name, info in found.items()
            if name.startswith(prefix) and info.get("type") != "directory"
        }

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._name(key)}"

    def exists(self, key: str) -> bool:
        with self._failing_clearly("lookup", key):
            return self._at(key).exists()

    def read_bytes(self, key: str) -> bytes:
        with self._failing_clearly("download", key):
            return self._at(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._failing_clearly("upload", key):
            self._at(key).write_bytes(data)

    def upload_dir(self, key: str, local_dir: Path) -> None:
        folder = self._at(key)
        with self._failing_clearly("upload", key):
            stale = set(self._files(key))
            for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
                relative = path.relative_to(local_dir).as_posix()
                folder.fs.put_file(str(path), f"{folder.path}/{relative}")
                stale.discard(relative)
            for relative in sorted(stale):
                folder.fs.rm_file(f"{folder.path}/{relative}")

    def local_dir(self, key: str) -> Path:
        folder = self._at(key)
        with self._failing_clearly("download", key):
            files = self._files(key)
            if not files:
                raise MissingArtifactError(f"artifact folder {self.uri(key)} does not exist")
            target = cache_dir() / "gcs" / self.bucket / self._name(key)
            for relative, size in files.items():
                path = target / relative
                if path.is_file() and path.stat().st_size == size:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                folder.fs.get_file(f"{folder.path}/{relative}", str(tmp))
                os.replace(tmp, path)
        return target

    def working_dir(self, key: str) -> Path:
        # Checkpoints stay on local disk next to the run; they survive a crashed process,
        # not a lost machine.
        path = cache_dir() / "gcs-work" / self.bucket / self._name(key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def children(self, key: str) -> list[str]:
        with self._failing_clearly("listing", key):
            return sorted({relative.split("/", 1)[0] for relative in self._files(key)} - {""})

    def delete(self, key: str) -> None:
        folder = self._at(key)
        with self._failing_clearly("delete", key):
            for relative in sorted(self._files(key)):
                folder.fs.rm_file(f"{folder.path}/{relative}")
            if folder.is_file():
                folder.unlink()
        work = cache_dir() / "gcs-work" / self.bucket / self._name(key)
        shutil.rmtree(work, ignore_errors=True)
