"""Code versions come from the source itself: the same wherever it is installed (a checkout, a
wheel, the pipeline image without .git), and changed by exactly the code an asset runs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from orchestration import definitions

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("assets", "data_checks", "bento")
PRINT_VERSIONS = """
import json
from assets.versioning import source_version
modules = {
    "raw_texts": "assets.data.raw",
    "fine_tuned_model": "assets.model.train",
    "evaluation_report": "assets.model.evaluate",
}
print(json.dumps({name: source_version(module) for name, module in modules.items()}))
"""


def versions_in(folder: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", PRINT_VERSIONS],
        cwd=folder,
        env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


def copy_without_git(tmp_path: Path) -> Path:
    copy = tmp_path / "installed"
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return copy


def test_every_asset_has_a_code_version():
    for asset in definitions.ASSETS:
        for key, version in asset.code_versions_by_key.items():
            assert version and len(version) == 12, key


def test_code_versions_are_the_same_outside_the_checkout(tmp_path):
    checkout = {
        asset.key.to_user_string(): asset.code_versions_by_key[asset.key]
        for asset in definitions.ASSETS
    }
    copied = versions_in(copy_without_git(tmp_path))
    assert copied == {name: checkout[name] for name in copied}


def test_a_helper_change_makes_stale_only_the_assets_that_run_it(tmp_path):
    copy = copy_without_git(tmp_path)
    before = versions_in(copy)
    baseline = copy / "assets" / "model" / "baseline.py"  # used by evaluation_report only
    baseline.write_text(baseline.read_text().replace("C=2.0", "C=1.0"))
    after = versions_in(copy)
    assert after["evaluation_report"] != before["evaluation_report"]
    assert after["raw_texts"] == before["raw_texts"]
    assert after["fine_tuned_model"] == before["fine_tuned_model"]


def test_the_checkout_instance_lets_one_training_run_at_a_time(tmp_path):
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
    fine_tuned = next(a for a in definitions.ASSETS if a.key.to_user_string() == "fine_tuned_model")
    assert fine_tuned.op.pool == "textops-training"
