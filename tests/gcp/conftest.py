"""An in-process GCS emulator on 127.0.0.1 for the session."""

import os

import pytest

from tests.conftest import free_port

# gcsfs's experimental hierarchical-namespace probe speaks gRPC, which the emulator does not:
# every call would retry for a minute. gcsfs reads this once, when it is first imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


@pytest.fixture(scope="session")
def gcs_emulator():
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="textops-test")
    server.start()
    previous = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    os.environ["GOOGLE_CLOUD_PROJECT"] = "textops-test"
    try:
        yield {"server": server, "bucket": "textops-test", "port": port}
    finally:
        server.stop()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def gcs_store(gcs_emulator, request):
    from orchestration.resources.gcs_store import GcsArtifactStore

    return GcsArtifactStore(
        bucket=gcs_emulator["bucket"],
        prefix=f"t/{request.node.name}",
    )
