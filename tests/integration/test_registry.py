"""The model store under faults: a registration killed half-way, leftovers a reader cannot
read, truncated weights, a lock held too long. Each test works on a store of its own holding a
copy of the session's approved model."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.integration.test_approval import approve, roll_back
from tests.processes import ROOT, bentoml_serve, running
from textops_core.registry import (
    CorruptModelError,
    RegistryBusyError,
    approved_models,
    publish_pending,
    serving_tag,
    store_lock,
)

# Publishes a copy of the model folder argv[1]; once the copy into the staging folder has begun
# it touches argv[2] and waits there to be killed.
PUBLISH_AND_HANG_WHILE_COPYING = """
import shutil, sys, tempfile, time
from pathlib import Path
from textops_core.registry import publish_pending

source, marker = Path(sys.argv[1]), Path(sys.argv[2])
scratch = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(source, scratch, ignore=shutil.ignore_patterns("model.yaml"))
copytree = shutil.copytree

def copy_then_hang(src, dst, **kwargs):
    result = shutil.copy2(src, dst, **kwargs)
    marker.touch()
    time.sleep(600)
    return result

def hanging_copytree(src, dst, *args, **kwargs):
    if ".textops-staging" in str(dst) and len(args) < 3:
        kwargs["copy_function"] = copy_then_hang
    return copytree(src, dst, *args, **kwargs)

shutil.copytree = hanging_copytree
publish_pending(scratch, {"approved": "true"}, {"label_names": ["positive", "negative"]})
"""

# Publishes a copy of argv[1] completely, prints its tag, and waits to be killed before it can
# approve it.
PUBLISH_THEN_HANG = """
import shutil, sys, tempfile, time
from pathlib import Path
from textops_core.registry import publish_pending

scratch = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(Path(sys.argv[1]), scratch, ignore=shutil.ignore_patterns("model.yaml"))
print(publish_pending(scratch, {"approved": "true"}, {}), flush=True)
time.sleep(600)
"""


def run_until(script: str, args: list[str], env: dict, ready) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready(process):
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read()[-3000:])
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError("the registration never reached the point to kill it at")
        time.sleep(0.2)
    return process


def plant_leftovers(home: Path, champion: Path) -> None:
    """What older writers and bad disks leave: a version folder without model.yaml (a copy
    killed half-way), and an approved model, newer than the champion, with truncated weights."""
    folder = home / "models" / "textops-classifier"
    half = folder / "halfcopied000001"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 1000)
    truncated = folder / "truncated0000001"
    import shutil

    shutil.copytree(champion, truncated)
    info = yaml.safe_load((truncated / "model.yaml").read_text())
    info["version"] = truncated.name
    info["creation_time"] = datetime.now(UTC).isoformat()
    (truncated / "model.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.fixture
def own_store(copied_model_store):
    home = copied_model_store
    champion = str(approved_models()[0].tag)
    env = {**os.environ, "BENTOML_HOME": str(home), "TEXTOPS_SERVING_LOG": "off"}
    env.pop("TEXTOPS_MODEL_TAG", None)
    return home, champion, home / "models" / champion.replace(":", "/"), env


def test_a_registration_killed_half_way_is_never_served(approved_graph, own_store, caplog):
    home, champion, champion_dir, env = own_store
    others = [str(m.tag) for m in approved_models()[1:]]
    marker = home / "copying"
    killed = run_until(
        PUBLISH_AND_HANG_WHILE_COPYING,
        [str(champion_dir), str(marker)],
        env,
        lambda _: marker.exists(),
    )
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    pending: list[str] = []
    published = run_until(
        PUBLISH_THEN_HANG,
        [str(champion_dir)],
        env,
        lambda process: pending.append(process.stdout.readline().strip()) or pending[-1],
    )
    published.send_signal(signal.SIGKILL)
    published.wait()
    plant_leftovers(home, champion_dir)

    # the store keeps working: the model killed while copying never reached it, the one killed
    # before approval is complete but not approved, the leftovers are skipped with warnings
    versions = {p.name for p in (home / "models" / "textops-classifier").iterdir()}
    # the copies, the pending model, the half-copied folder and the truncated model
    assert len(versions - {"latest"}) == 1 + len(others) + 3
    assert pending[0].split(":")[1] in versions
    assert [str(m.tag) for m in approved_models()] == [champion, *others]
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "halfcopied000001" in warnings and "cannot be read" in warnings
    assert "truncated0000001" in warnings and "model.safetensors has" in warnings
    assert serving_tag() == champion

    # the next service start serves the champion
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(bentoml_serve(port), env, home / "serve.log", ready_url=f"{url}/readyz"):
        assert httpx.post(f"{url}/model", json={}, timeout=30).json()["tag"] == champion
        answer = httpx.post(f"{url}/classify", json={"texts": ["a wonderful day"]}, timeout=30)
        assert answer.status_code == 200
        # ... and counts what it skipped
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        for leftover in ("halfcopied000001", "truncated0000001"):
            counted = (
                f'textops_model_store_skipped_entries_total{{tag="textops-classifier:{leftover}"}}'
            )
            assert counted in metrics

    # the next gate compares with the champion and publishes a complete model
    gate = approve(approved_graph)
    assert gate.success
    decision = gate.output_for_node("approved_model")
    assert decision.approved and decision.served_tag not in {champion, pending[0]}
    assert "vs champion" in decision_summary(gate)
    assert [str(m.tag) for m in approved_models()] == [decision.served_tag, champion, *others]

    # rollback works, and works once
    assert roll_back(approved_graph, decision.served_tag).success
    assert [str(m.tag) for m in approved_models()] == [champion, *others]
    again = roll_back(approved_graph, decision.served_tag)
    assert again.success and again.output_for_node("served_model").tag == champion
    assert [str(m.tag) for m in approved_models()] == [champion, *others]


def decision_summary(result) -> str:
    return result.asset_materializations_for_node("approved_model")[0].metadata["summary"].value


def test_weights_changed_in_the_copy_are_refused_before_they_reach_the_store(
    own_store, tmp_path, monkeypatch
):
    import shutil

    home, _, champion_dir, _ = own_store
    scratch = tmp_path / "model"
    shutil.copytree(champion_dir, scratch, ignore=shutil.ignore_patterns("model.yaml"))
    copytree = shutil.copytree

    def truncating_copy(src, dst, **kwargs):
        result = shutil.copy2(src, dst, **kwargs)
        if str(dst).endswith("model.safetensors"):
            Path(dst).write_bytes(Path(dst).read_bytes()[:100])
        return result

    def copytree_into_staging(src, dst, *args, **kwargs):
        if ".textops-staging" in str(dst) and len(args) < 3:  # (sub-folders get it by position)
            kwargs["copy_function"] = truncating_copy
        return copytree(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copytree", copytree_into_staging)
    before = sorted(p.name for p in (home / "models" / "textops-classifier").iterdir())
    with pytest.raises(CorruptModelError, match="model.safetensors has 100 bytes"):
        publish_pending(scratch, {"approved": "true"}, {})
    after = sorted(p.name for p in (home / "models" / "textops-classifier").iterdir())
    assert after == before
    assert not any((home / ".textops-staging").iterdir())


def test_the_lock_gives_up_with_a_message_and_readers_never_wait(own_store, monkeypatch):
    home, _, _, env = own_store
    holder = run_until(
        "import sys, time\nfrom textops_core.registry import store_lock\n"
        "with store_lock():\n    print('held', flush=True)\n    time.sleep(600)\n",
        [],
        env,
        lambda process: process.stdout.readline().strip() == "held",
    )
    try:
        monkeypatch.setenv("TEXTOPS_REGISTRY_LOCK_TIMEOUT_S", "1")
        started = time.monotonic()
        busy = pytest.raises(RegistryBusyError, match="held by another process for over 1 s")
        with busy, store_lock():
            pass
        assert time.monotonic() - started < 10
        assert approved_models()  # a reader takes no lock
    finally:
        holder.kill()
        holder.wait()
    with store_lock() as waited_s:  # a holder that dies releases the lock
        assert waited_s < 5
