import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
