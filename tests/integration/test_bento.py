"""`bento`: bentoml build of the approved model, and a lint of the Dockerfile it generates."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import materialize_selected


@pytest.fixture(scope="module")
def built(approved_graph):
    result = materialize_selected(
        approved_graph["store"], ["served_model", "bento"], instance=approved_graph["instance"]
    )
    return result.asset_materializations_for_node("bento")[0].metadata


def test_bento_carries_the_served_model_and_its_lineage(built, approved_graph):
    import bentoml

    tag = built["bento_tag"].value
    info = bentoml.get(tag).info
    assert [str(m.tag) for m in info.all_models] == [built["model_tag"].value]
    assert info.labels["model_tag"] == built["model_tag"].value
    assert info.labels["dagster_run_id"]
    assert built["size_mb_with_model"].value > 10  # the weights count


def test_generated_dockerfile_passes_hadolint_at_error_threshold(built):
    dockerfile = Path(built["dockerfile"].value)
    assert dockerfile.is_file()
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "error", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_bento_pins_the_locked_versions_with_their_hashes(built):
    """The bento installs exactly its build file's lock: bento-onnx.lock for an ONNX variant,
    bento-torch.lock when PyTorch is served (whichever the parity check chose), or the one
    the asset's `bentofile` names."""
    from assets.serving.package import ROOT, locked_requirements
    from tests.unit.test_lock import locked

    requirements = Path(built["bento_path"].value) / "env" / "python" / "requirements.txt"
    text = requirements.read_text()
    pins = {
        name.lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.MULTILINE)
    }
    lock_file = locked_requirements(ROOT / built["bentofile"].value)
    lock = locked(lock_file.name)
    runtime = "torch" if "torch" in lock else "onnxruntime"
    assert {runtime, "tokenizers", "bentoml"} <= set(pins), lock_file.name
    assert {name: lock[name] for name in pins} == pins
    assert "--hash=sha256:" in text


def test_the_approved_variant_records_the_runtime_it_was_checked_under(approved_graph):
    import bentoml

    from textops_core.inference import serving_settings
    from textops_core.runtime import installed_versions

    model = bentoml.models.get(approved_graph["tag"])
    runtime = serving_settings(Path(model.path))["runtime"]
    installed = {name: v for name, v in installed_versions().items() if v is not None}
    assert runtime == installed and {"onnxruntime", "tokenizers", "torch"} <= set(runtime)


def test_the_guides_gpu_build_makes_a_bento_that_declares_its_gpu_on_a_plain_base(
    built, approved_graph
):
    """docs/deploy.md's GPU build line, as written: the bento's service declares one GPU (the
    CPU bento's none), and its image starts from a plain Python base (torch brings CUDA)."""
    import yaml

    from assets.serving.package import ROOT, _bentoml

    guide = (ROOT / "docs" / "deploy.md").read_text()
    section = guide[guide.index("\n## 5. ") :]
    build, containerize = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()[:2]
    command = build.split("#")[0].split()
    assert command[:2] == ["bentoml", "build"]
    _bentoml(*command[1:], env={"TEXTOPS_MODEL_TAG": approved_graph["tag"]})
    tag = containerize.split()[2]  # bentoml containerize <tag> -t ...
    path = Path(_bentoml("get", tag, "-o", "path").strip())
    info = yaml.safe_load((path / "bento.yaml").read_text())
    assert info["args"] == {"gpus": 1}
    assert [s["config"].get("resources") for s in info["services"]] == [{"gpu": 1}]
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["python:3.11-slim"]
    cpu = yaml.safe_load((Path(built["bento_path"].value) / "bento.yaml").read_text())
    assert [s["config"].get("resources") for s in cpu["services"]] == [None]
