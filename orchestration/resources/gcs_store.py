"""The artifact store on Google Cloud Storage (the `gcp` extra)."""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster_gcp import GCSResource
from pydantic import Field

from assets.interfaces.errors import ArtifactStoreError, MissingArtifactError
from assets.interfaces.store import ArtifactStore, cache_dir


class GcsArtifactStore(ArtifactStore):
    """Artifacts in a GCS bucket through dagster-gcp's GCSResource. An object becomes visible
    only when its upload completes, and an asset's manifest is written after its artifacts, so
    a failed run leaves nothing a later step would take for complete."""

    gcs: GCSResource
    bucket: str = Field(description="Bucket name")
    prefix: str = Field("textops", description="Key prefix inside the bucket")
    retry_deadline_s: float = Field(
        120.0, description="How long one operation retries transient errors before failing"
    )

    @contextmanager
    def _failing_clearly(self, action: str, key: str) -> Iterator[None]:
        from google.api_core import exceptions
        from requests import exceptions as http

        try:
            yield
        except exceptions.NotFound:
            raise
        except (exceptions.GoogleAPIError, http.RequestException, ConnectionError) as error:
            raise ArtifactStoreError(
                f"GCS {action} of {self.uri(key)} failed: {type(error).__name__}: "
                f"{str(error)[:300]}. Nothing was made current by this step; rerun it when "
                "the bucket is reachable"
            ) from error

    def _retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_deadline(self.retry_deadline_s)

    def _name(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if ".." in parts:
            raise ValueError(f"artifact key {key!r} escapes the store prefix")
        return "/".join([p for p in self.prefix.split("/") if p] + parts)

    def _bucket(self):
        return self.gcs.get_client().bucket(self.bucket)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._name(key)}"

    def exists(self, key: str) -> bool:
        with self._failing_clearly("lookup", key):
            return self._bucket().blob(self._name(key)).exists(retry=self._retry())

    def read_bytes(self, key: str) -> bytes:
        with self._failing_clearly("download", key):
            return self._bucket().blob(self._name(key)).download_as_bytes(retry=self._retry())

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._failing_clearly("upload", key):
            self._bucket().blob(self._name(key)).upload_from_string(data, retry=self._retry())

    def _list(self, key: str) -> list:
        prefix = self._name(key).rstrip("/") + "/"
        return list(self.gcs.get_client().list_blobs(self.bucket, prefix=prefix))

    def upload_dir(self, key: str, local_dir: Path) -> None:
        names = set()
        for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            relative = path.relative_to(local_dir).as_posix()
            names.add(self._name(f"{key}/{relative}"))
            self._bucket().blob(self._name(f"{key}/{relative}")).upload_from_filename(str(path))
        for blob in self._list(key):
            if blob.name not in names:
                blob.delete()

    def local_dir(self, key: str) -> Path:
        blobs = self._list(key)
        if not blobs:
            raise MissingArtifactError(f"artifact folder {self.uri(key)} does not exist")
        target = cache_dir() / "gcs" / self.bucket / self._name(key)
        prefix = self._name(key).rstrip("/") + "/"
        for blob in blobs:
            path = target / blob.name[len(prefix) :]
            if path.is_file() and path.stat().st_size == blob.size:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            blob.download_to_filename(str(tmp))
            os.replace(tmp, path)
        return target

    def working_dir(self, key: str) -> Path:
        # Checkpoints stay on local disk next to the run; they survive a crashed process,
        # not a lost machine.
        path = cache_dir() / "gcs-work" / self.bucket / self._name(key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def children(self, key: str) -> list[str]:
        prefix = self._name(key).rstrip("/") + "/"
        with self._failing_clearly("listing", key):
            return sorted(
                {blob.name[len(prefix) :].split("/", 1)[0] for blob in self._list(key)} - {""}
            )

    def delete(self, key: str) -> None:
        for blob in self._list(key):
            blob.delete()
        single = self._bucket().blob(self._name(key))
        if single.exists():
            single.delete()
        shutil.rmtree(cache_dir() / "gcs-work" / self.bucket / self._name(key), ignore_errors=True)
