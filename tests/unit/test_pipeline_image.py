import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_lock import locked

ROOT = Path(__file__).resolve().parents[2]
# the code location with the Kubernetes executor, and the versions of what runs the steps
IN_THE_IMAGE = (
    "import importlib.metadata as m, json, orchestration.definitions, dagster_postgres; "
    "print(json.dumps({d: m.version(d) for d in ('dagster', 'dagster-k8s', "
    "'dagster-postgres', 'torch', 'transformers', 'onnxruntime', 'bentoml')}))"
)


def test_dockerfile_passes_hadolint_at_error_threshold():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "error", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_code_location_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER textops\n" in text
    assert "HEALTHCHECK" in text and "grpc-health-check" in text
    assert '"code-server", "start"' in text and "orchestration.definitions" in text
    # dependencies are installed, from the locks, before the source is copied, so code edits
    # keep that layer
    assert text.index("COPY requirements/") < text.index("COPY --chown=textops:textops . .")
    assert "--require-hashes --no-deps -r requirements/uv.lock" in text
    assert "requirements/pipeline-image.lock" in text and "requirements/bootstrap.lock" in text


@pytest.mark.slow
def test_pipeline_image_builds_and_its_code_server_answers(podman_image):
    if os.geteuid() != 0:
        pytest.skip("buildah with chroot isolation and podman need root here")
    podman_image("textops-pipeline:test")
    result = subprocess.run(
        ["bash", "scripts/build_pipeline_image.sh", "textops-pipeline:test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "code server healthy" in result.stdout
    # the deployment's parts are in the image, at their locked versions, and load
    check = subprocess.run(
        ["podman", "run", "--rm", "--runtime", "runc", "--network", "host",
         "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
         "-e", "TEXTOPS_EXECUTOR=k8s", "--entrypoint", "python3", "textops-pipeline:test",
         "-c", IN_THE_IMAGE],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    installed = json.loads(check.stdout.strip().splitlines()[-1])
    lock = locked("pipeline-image.lock")
    assert installed == {name: lock[name] for name in installed}
