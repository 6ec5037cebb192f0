"""The code location's image, built from this checkout: its code server answers and it holds the
locked versions; and the pipeline job with every step in a container of it on one machine
(TEXTOPS_EXECUTOR=docker: dagster-docker's executor, talking to podman's Docker API), from the
pipeline image built from this checkout, with the run config of docs/deploy.md's section 7."""

import json
import os
import re
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.conftest import graph_run_config, need_container_tools, write_tweeteval
from tests.processes import BIN, ROOT, running, write_dagster_yaml
from tests.unit.test_lock import locked

GUIDE = ROOT / "docs" / "deploy.md"
GUIDE_ROOT = "/srv/textops"  # the shared folder of the guide's commands
# what the run's own process writes about a step (before it starts the step's container)
RUN_PROCESS_EVENTS = {
    "ASSET_MATERIALIZATION_PLANNED",
    "ASSET_CHECK_EVALUATION_PLANNED",
    "STEP_WORKER_STARTING",
}
# the code location with the Kubernetes executor, and the versions of what runs the steps (the
# Docker executor's among them)
IN_THE_IMAGE = (
    "import importlib.metadata as m, json, orchestration.definitions, dagster_postgres; "
    "print(json.dumps({d: m.version(d) for d in ('dagster', 'dagster-k8s', 'dagster-docker', "
    "'dagster-postgres', 'torch', 'transformers', 'onnxruntime', 'bentoml')}))"
)
LANDED = [("a landed tweet: what a wonderful morning", "positive"),
          ("a landed tweet: what a dreadful evening", "negative")]  # fmt: skip


def guide_run_config(root: Path, image: str, label: str) -> dict:
    """docs/deploy.md's executor config, for the shared folder `root` instead of /srv/textops,
    the test's image, containers running as this process's user (the owner of `root`), and a
    label of the test's own on them."""
    text = GUIDE.read_text()
    start = text.index("\n## 7. ")
    block = re.search(r"```yaml\n(execution:.*?)```", text[start:], re.S)[1]
    config = yaml.safe_load(block.replace(GUIDE_ROOT, str(root)))
    kwargs = config["execution"]["config"]["container_kwargs"]
    assert kwargs["volumes"] == [f"{root}:{root}:rw"]
    config["execution"]["config"]["image"] = image
    kwargs["user"] = f"{os.getuid()}:{os.getgid()}"
    kwargs["labels"] = {"textops": label}
    return config


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


@pytest.fixture
def docker_api(tmp_path_factory):
    """podman serving the Docker API on a socket of the test's own (outside the folder the
    steps mount), as docs/deploy.md starts it; yields a client of it and DOCKER_HOST; the
    containers the test labelled are removed."""
    need_container_tools()
    import docker

    folder = tmp_path_factory.mktemp("podman")
    socket = folder / "podman.sock"
    url = f"unix://{socket}"
    command = ["podman", "--runtime", "runc", "system", "service", "--time=0", url]
    with running(command, dict(os.environ), folder / "service.log"):
        deadline = time.monotonic() + 60
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        client = docker.DockerClient(base_url=url)
        label = f"test-{uuid.uuid4().hex[:10]}"
        try:
            client.ping()
            yield {"client": client, "url": url, "label": label}
        finally:
            labelled = {"label": f"textops={label}"}
            for container in client.containers.list(all=True, filters=labelled):
                container.remove(force=True)
            client.close()


def container_time(stamp: str) -> float:
    """A Docker API timestamp (RFC 3339, nanoseconds) as seconds since the epoch."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).astimezone(UTC).timestamp()


@pytest.mark.slow  # builds the pipeline image (about a minute), then the graph (about 2 minutes)
def test_every_step_of_the_pipeline_job_runs_in_a_container_of_its_own(
    pipeline_image, docker_api, tmp_path
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    write_dagster_yaml(home)
    landing = tmp_path / "landing"  # TEXTOPS_LANDING (tests/conftest.py)
    landing.mkdir()
    (landing / "landed.csv").write_text(
        "text,label\n" + "".join(f"{text},{label}\n" for text, label in LANDED)
    )
    config = graph_run_config(write_tweeteval(tmp_path / "data"))
    config |= guide_run_config(tmp_path, pipeline_image["name"], docker_api["label"])
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "DOCKER_HOST": docker_api["url"],
        "TEXTOPS_EXECUTOR": "docker",
        "DAGSTER_HOME": str(home),
        "TEXTOPS_HOME": str(tmp_path / "store"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "orchestration.definitions",
         "-j", "pipeline", "-c", str(tmp_path / "run.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    print(f"the pipeline job, every step in a container: {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stderr[-4000:]

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        (run,) = instance.get_runs(filters=dg.RunsFilter(job_name="pipeline"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        events = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.step_key]
        materializations = {
            e.step_key: e.dagster_event.event_specific_data.materialization.metadata
            for e in events
            if e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
    finally:
        instance.dispose()

    # Every step of the plan, the two blocking check steps among them, ran in a container of
    # its own from the built image: Dagster recorded the container it started for the step,
    # the container says which step it was started for and that it exited cleanly, each event
    # the step wrote falls within the container's life, and was written by process 1, the
    # first process of a PID namespace of its own (never a process of this machine's).
    steps = set(plan.step_keys_to_execute)
    assert {"raw_texts_checks", "text_splits_checks", "fine_tuned_model", "bento"} <= steps
    image = docker_api["client"].images.get(pipeline_image["name"])
    containers = {}
    for step in sorted(steps):
        (starting,) = [
            e for e in events
            if e.step_key == step and e.dagster_event.event_type_value == "STEP_WORKER_STARTING"
        ]  # fmt: skip
        metadata = starting.dagster_event.event_specific_data.metadata
        container = docker_api["client"].containers.get(metadata["Docker container id"].value)
        containers[step] = container.id
        assert container.image.id == image.id
        assert f"DAGSTER_RUN_STEP_KEY={step}" in container.attrs["Config"]["Env"]
        state = container.attrs["State"]
        assert state["ExitCode"] == 0 and state["Status"] == "exited", (step, state)
        life = (container_time(state["StartedAt"]), container_time(state["FinishedAt"]))
        own = [
            e for e in events
            if e.step_key == step and e.dagster_event.event_type_value not in RUN_PROCESS_EVENTS
        ]  # fmt: skip
        kinds = {e.dagster_event.event_type_value for e in own}
        assert {"STEP_WORKER_STARTED", "STEP_START", "STEP_SUCCESS"} <= kinds, (step, kinds)
        for event in own:
            assert event.dagster_event.pid == 1, (step, event.dagster_event.event_type_value)
            assert life[0] <= event.timestamp <= life[1], (step, event.timestamp, life)
    assert len(set(containers.values())) == len(steps)

    # The outputs are on the shared folder, where this machine reads them: the landed file
    # reached raw_texts (TEXTOPS_LANDING was forwarded), every asset's manifest is in the
    # store, the approved model in the BentoML store, and the bento built from it there.
    raw = materializations["raw_texts"]
    assert [f["file"] for f in raw["landed_files"].value] == ["landed.csv"]
    assert raw["rows"].value == 40 + 12 + 12 + len(LANDED)
    manifests = tmp_path / "store" / "manifests"
    for asset in ("raw_texts", "text_splits", "fine_tuned_model", "evaluation_report",
                  "serving_variants", "approved_model", "served_model"):  # fmt: skip
        assert any((manifests / asset).glob("*.json")), asset
    bento = materializations["bento"]
    model_name, model_version = bento["model_tag"].value.split(":")
    assert (tmp_path / "bentoml" / "models" / model_name / model_version / "model.yaml").is_file()
    bento_name, bento_version = bento["bento_tag"].value.split(":")
    built = yaml.safe_load(
        (tmp_path / "bentoml" / "bentos" / bento_name / bento_version / "bento.yaml").read_text()
    )
    assert built["labels"]["model_tag"] == bento["model_tag"].value
    assert built["labels"]["dagster_run_id"] == run.run_id
