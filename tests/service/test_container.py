"""The bento's container image built with buildah and answering `classify` under podman."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cpu_torch_wheel, materialize_selected
from tests.unit.test_lock import locked

ROOT = Path(__file__).resolve().parents[2]
PRINT_VERSIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d: m.version(d) for d in ('onnxruntime', 'tokenizers', 'numpy', "
    "'bentoml', 'pydantic')}))"
)


@pytest.mark.slow
def test_containerized_bento_answers_classify(approved_graph, podman_image):
    if os.geteuid() != 0:
        pytest.skip("buildah with chroot isolation and podman need root here")
    wheel = cpu_torch_wheel()
    if wheel is None:
        pytest.skip("no local CPU torch wheel (set TEXTOPS_TORCH_WHEEL)")
    result = materialize_selected(
        approved_graph["store"],
        ["served_model", "bento"],
        run_config={"ops": {"bento": {"config": {"torch_wheel": wheel}}}},
        instance=approved_graph["instance"],
    )
    tag = result.asset_materializations_for_node("bento")[0].metadata["bento_tag"].value
    env = {
        **os.environ,
        "BENTOML": str(Path(sys.executable).parent / "bentoml"),
        "PORT": "3997",
        "TEXTOPS_MODEL_TAG": "",
    }
    podman_image("textops-test:latest")
    run = subprocess.run(
        ["bash", "scripts/containerize.sh", tag, "textops-test:latest"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    answer = run.stdout.strip().splitlines()[-1]
    assert '"label"' in answer and '"probabilities"' in answer
    # the image runs the locked runtime, the one the parity check ran under
    versions = subprocess.run(
        ["podman", "run", "--rm", "--runtime", "runc", "--network", "host",
         "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
         "--entrypoint", "python3", "textops-test:latest", "-c", PRINT_VERSIONS],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    installed = json.loads(versions.strip().splitlines()[-1])
    lock = locked("bento-onnx.lock")
    assert {name: lock[name] for name in installed} == installed
    assert installed["onnxruntime"] and installed["tokenizers"]
