"""Publishing and approving killed at each of their steps, with SIGKILL, in a real process: the
store is left with the champion it had (or, killed after the approval's rename, the new one),
never a model approved half-way, and the next publish and approval work."""

import os
import signal
from pathlib import Path

import pytest

from tests.processes import run_python

# Publishes and approves argv[2] (a model folder) in the store at $BENTOML_HOME, killing itself
# with SIGKILL on the call number argv[4] to function argv[3] ("module:name"), before the call
# when argv[5] is "before", after it otherwise.
PUBLISH_KILLED_AT = """
import importlib, os, signal, sys
from pathlib import Path

model_dir, target, nth, when = sys.argv[1:]
module_name, name = target.split(":")
module = importlib.import_module(module_name)
real = getattr(module, name)
calls = 0

models = os.path.join(os.environ["BENTOML_HOME"], "models")

def killed(*args, **kwargs):
    global calls
    if module_name == "os" and not str(args[1]).startswith(models):
        return real(*args, **kwargs)  # only the moves into the store count
    calls += 1
    print("call", calls, name, *map(str, args[:2]), file=sys.stderr, flush=True)
    if calls == int(nth) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if calls == int(nth) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(module, name, killed)
from textops_core import registry
tag = registry.publish_pending(Path(model_dir), {"source": "test"}, {"label_names": ["a", "b"]})
registry.approve(tag)
print(tag, flush=True)
"""

# Every call that writes or moves a model's files, by its number among the calls of its kind
# in one publish and approve; each killed before it and after it.
STEPS = [
    ("textops_core.registry:write_checksums", 1),  # the checksums of the folder to publish
    ("shutil:copytree", 1),  # BentoML's copy into its temporary folder
    ("shutil:copytree", 2),  # ... and into the staging folder
    ("textops_core.registry:integrity_problems", 1),  # the staged copy checked
    ("textops_core.registry:_fsync_tree", 1),
    ("os:rename", 1),  # the staged model moved into the store
    ("textops_core.registry:_fsync_dir", 3),  # the store's folder flushed after the move
    ("os:replace", 1),  # the `latest` alias
    ("textops_core.registry:integrity_problems", 2),  # the approval's check
    ("os:replace", 2),  # the approval's label flip
]
LABEL_FLIP = ("os:replace", 2)


def a_model(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(content * 10_000)
    (folder / "config.json").write_text('{"labels": ["a", "b"]}')
    return folder


def read_store(home: Path) -> tuple[list[str], dict[str, str], str | None]:
    """(approved tags newest first, every readable tag's `approved` label, the tag served)."""
    from tests.conftest import model_store
    from textops_core import registry

    with model_store(home):
        approved = [str(m.tag) for m in registry.approved_models()]
        stored = {str(m.tag): m.info.labels.get("approved") for m in registry.stored_models()}
        return approved, stored, registry.serving_tag() if approved else None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A BentoML home with one approved model (the champion), and the environment to use it."""
    home = tmp_path_factory.mktemp("faults") / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("TEXTOPS_MODEL_TAG", None)
    model = str(a_model(home.parent / "champion", b"c"))
    champion = run_python(PUBLISH_KILLED_AT, env, model, "textops_core.registry:_sha256", "0", "no")
    assert champion.returncode == 0, champion.stderr[-2000:]
    return home, env, champion.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize(("step", "nth"), STEPS, ids=[f"{s}-{n}" for s, n in STEPS])
@pytest.mark.parametrize("when", ["before", "after"])
def test_publishing_killed_at_each_step_never_serves_a_half_model(
    store, step, nth, when, monkeypatch
):
    monkeypatch.delenv("TEXTOPS_MODEL_TAG", raising=False)
    home, env, champion = store
    approved_before, _, _ = read_store(home)
    model = a_model(home.parent / f"{step.replace(':', '-')}-{nth}-{when}", b"x")
    killed = run_python(PUBLISH_KILLED_AT, env, str(model), step, str(nth), when)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    approved, stored, serving = read_store(home)
    # nothing half-way is approved: the champion as before or, killed once the approval's
    # label flip is done, the new model, complete
    new = [tag for tag in approved if tag not in approved_before]
    assert approved[len(new) :] == approved_before
    assert len(new) == (1 if (step, nth, when) == (*LABEL_FLIP, "after") else 0)
    assert serving == (new or approved_before)[0]
    assert set(stored.values()) <= {"true", "pending"}

    if (step, nth) == LABEL_FLIP:  # the store keeps working: the next registration goes in
        again = run_python(
            PUBLISH_KILLED_AT, env, str(model), "textops_core.registry:_sha256", "0", "no"
        )
        assert again.returncode == 0, again.stderr[-2000:]
        assert read_store(home)[0][0] == again.stdout.strip()
    assert champion in read_store(home)[0]
