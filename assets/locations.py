"""Files at a local path or a `gs://` URI through one code path: universal-pathlib over fsspec,
with gcsfs for Google Cloud Storage (an emulator at STORAGE_EMULATOR_HOST in tests)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from upath import UPath


class LocationError(ValueError):
    """A location URI is malformed, or cannot be reached with the credentials at hand."""


def location(uri: str | Path) -> UPath:
    """A path-like view of `uri`: a local path (`~` expanded) or `gs://bucket/prefix`."""
    uri = str(uri)
    if not uri.startswith("gs://"):
        return UPath(Path(uri).expanduser())
    bucket = uri.removeprefix("gs://").split("/", 1)[0]
    if not bucket:
        raise LocationError(f"{uri}: a gs:// URI needs a bucket, e.g. gs://my-bucket/data/hate")
    # Listings are not cached: a sensor asks the same prefix again for files landed since.
    options: dict[str, object] = {"use_listings_cache": False, "skip_instance_cache": True}
    if emulator := os.environ.get("STORAGE_EMULATOR_HOST"):
        options |= {"endpoint_url": emulator, "token": "anon"}
    else:
        options["token"] = "google_default"  # fail with "no credentials", never fall back to anon
    if project := os.environ.get("GOOGLE_CLOUD_PROJECT"):
        options["project"] = project
    return UPath(uri, **options)


@contextlib.contextmanager
def google_credentials(uri: str) -> Iterator[None]:
    """Turns "no credentials" from the Google client libraries into what to do about it."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        yield
    except DefaultCredentialsError:
        raise LocationError(
            f"{uri}: no Google Cloud credentials found; set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file or run `gcloud auth application-default login`, and set "
            "GOOGLE_CLOUD_PROJECT"
        ) from None
