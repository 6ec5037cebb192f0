"""`bento`: bentoml build of the approved model, and a lint of the Dockerfile it generates."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import materialize_selected


@pytest.fixture(scope="module")
def built(approved_graph):
    result = materialize_selected(
        approved_graph["store"], ["bento"], instance=approved_graph["instance"]
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
