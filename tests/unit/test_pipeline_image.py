import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_lock import locked

ROOT = Path(__file__).resolve().parents[2]
# the code location with the Kubernetes executor, and the versions of what runs the steps (the
# Docker executor's among them)
IN_THE_IMAGE = (
    "import importlib.metadata as m, json, orchestration.definitions, dagster_postgres; "
    "print(json.dumps({d: m.version(d) for d in ('dagster', 'dagster-k8s', 'dagster-docker', "
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
    # the code server is the image's command, not its entrypoint: Dagster's executors and run
    # launchers give the containers they start from it a command of their own
    assert '\nCMD ["dagster", "code-server"' in text and "\nENTRYPOINT" not in text
    # dependencies are installed, from the locks, before the source is copied, so code edits
    # keep that layer
    assert text.index("COPY requirements/") < text.index("COPY --chown=textops:textops . .")
    assert "--require-hashes --no-deps -r requirements/uv.lock" in text
    assert "requirements/pipeline-image.lock" in text and "requirements/bootstrap.lock" in text


@pytest.mark.slow
def test_pipeline_image_builds_and_its_code_server_answers(pipeline_image):
    assert "code server healthy" in pipeline_image["build_output"]
    # the deployment's parts are in the image, at their locked versions, and load
    check = subprocess.run(
        ["podman", "run", "--rm", "--runtime", "runc", "--network", "host",
         "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
         "-e", "TEXTOPS_EXECUTOR=k8s", "--entrypoint", "python3", pipeline_image["name"],
         "-c", IN_THE_IMAGE],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    installed = json.loads(check.stdout.strip().splitlines()[-1])
    lock = locked("pipeline-image.lock")
    assert installed == {name: lock[name] for name in installed}
