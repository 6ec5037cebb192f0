"""Shared fixtures: offline settings, small real-format data, a store in tmp_path."""

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def session_dir(prefix: str) -> str:
    """A temporary folder for this test session, removed when the session's process ends (a model
    store holds a gigabyte after the suite; CI's machine keeps its disk between runs)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# The temporary files of every process the tests start, a killed one's among them (BentoML's
# half-written models, the scripts' scratch copies), in one folder removed with the session.
os.environ["TMPDIR"] = session_dir("textops-tests-")

# One BentoML store per test session, set before bentoml is imported anywhere.
os.environ["BENTOML_HOME"] = session_dir("textops-bentoml-")
if "TEXTOPS_SERVING_LOG" not in os.environ:
    os.environ["TEXTOPS_SERVING_LOG"] = session_dir("textops-serving-log-")
os.environ["TEXTOPS_LANDING"] = session_dir("textops-landing-")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval"

POSITIVE = ["love", "great", "wonderful", "happy", "excellent", "kind", "sunny", "brilliant"]
NEGATIVE = ["hate", "awful", "terrible", "angry", "horrible", "cruel", "gloomy", "dreadful"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_rows(n: int, offset: int = 0) -> list[tuple[str, int]]:
    """`n` distinct short tweets, alternating labels: 0 positive words, 1 negative words."""
    rows = []
    for i in range(offset, offset + n):
        label = i % 2
        words = POSITIVE if label == 0 else NEGATIVE
        rows.append(
            (f"@user tweet {i}: such a {words[i % 8]} day, {words[(i + 3) % 8]} too", label)
        )
    return rows


def write_tweeteval(folder: Path, sizes=(40, 12, 12), mapping=("positive", "negative")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(mapping)))
    offset = 0
    for stem, size in zip(("train", "val", "test"), sizes, strict=True):
        rows = tiny_rows(size, offset)
        offset += size
        (folder / f"{stem}_text.txt").write_text("".join(f"{t}\n" for t, _ in rows))
        (folder / f"{stem}_labels.txt").write_text("".join(f"{label}\n" for _, label in rows))
    return folder


@pytest.fixture
def tweeteval_dir(tmp_path: Path) -> Path:
    return write_tweeteval(tmp_path / "tweeteval")


@pytest.fixture
def store(tmp_path: Path):
    from orchestration.resources import LocalArtifactStore

    return LocalArtifactStore(root=str(tmp_path / "store"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTOPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TEXTOPS_LANDING", str(tmp_path / "landing"))
    monkeypatch.delenv("TEXTOPS_SOURCE", raising=False)


@pytest.fixture
def shared_tweeteval() -> Path:
    if not (SHARED_DATA / "hate" / "train_text.txt").is_file():
        pytest.skip(f"real TweetEval data not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA


# The graph up to the gate (the bento's build is left to the tests about it)
THROUGH_APPROVAL = [
    "raw_texts",
    "text_splits",
    "fine_tuned_model",
    "evaluation_report",
    "serving_variants",
    "approved_model",
]

GRAPH_TRAIN = {
    "max_steps": 40,
    "batch_size": 16,
    "max_length": 32,
    "learning_rate": 1e-4,
    "checkpoint_every_n_steps": 20,
    "warmup_ratio": 0.05,
}


def graph_run_config(source: Path, selected: set[str] | None = None, **ops) -> dict:
    """Run config of the graph on tiny data: few steps, no floor for approval."""
    config = {
        "raw_texts": {"config": {"source": str(source)}},
        "fine_tuned_model": {"config": GRAPH_TRAIN},
        "evaluation_report": {"config": {"latency_samples": 4}},
        # tiny separable data: the TF-IDF baseline is perfect too, so it cannot be beaten
        "approved_model": {"config": {"absolute_floor": 0.0, "must_beat_baseline": False}},
    }
    for name, op_config in ops.items():
        config[name] = {"config": {**config.get(name, {}).get("config", {}), **op_config}}
    if selected is not None:
        config = {name: value for name, value in config.items() if name in selected}
    return {"ops": config}


def latest_manifest(instance, store, asset: str, manifest_type):
    """The manifest of `asset` as materialized last in `instance`."""
    import dagster as dg

    from assets.interfaces.manifests import manifest_key
    from orchestration.resources.manifest_io import recorded_version

    version = recorded_version(instance, dg.AssetKey(asset), None)
    return manifest_type.model_validate_json(store.read_bytes(manifest_key(asset, version)))


def materialize_selected(
    store,
    selection: list[str],
    run_config: dict | None = None,
    raise_on_error: bool = True,
    instance=None,
):
    """Materialize `selection` out of the whole code location with the pipeline's resources
    over `store`; with `instance`, unselected upstream assets are read as materialized there."""
    import dagster as dg

    from orchestration import definitions

    return dg.materialize(
        [*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=selection,
        resources=definitions.pipeline_resources(store),
        run_config=run_config,
        raise_on_error=raise_on_error,
        instance=instance,
    )


@contextlib.contextmanager
def model_store(home: Path):
    """This process's BentoML model store at `home` for the block (subprocesses get the same
    folder through BENTOML_HOME)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    (home / "models").mkdir(parents=True, exist_ok=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store_dir.set(str(home / "models"))
    BentoMLContainer.model_store.set(ModelStore(home / "models"))
    try:
        yield home
    finally:
        for provider in (
            BentoMLContainer.bentoml_home,
            BentoMLContainer.model_store_dir,
            BentoMLContainer.model_store,
        ):
            provider.reset()


@pytest.fixture
def model_store_at():
    """Point this process's BentoML model store at another folder (`use(home)`), for a test
    that must not touch the session's store; restored afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda home: stack.enter_context(model_store(home))


def copy_registered(tag: str, home: Path) -> Path:
    """A copy of the registered model `tag` (of the current store) under another BentoML home,
    with the same tag."""
    import shutil

    import bentoml

    source = Path(bentoml.models.get(tag).path)
    name, version = tag.split(":")
    target = home / "models" / name / version
    shutil.copytree(source, target)
    return target


def cpu_torch_wheel() -> str | None:
    """A local CPU torch wheel (TEXTOPS_TORCH_WHEEL, or the one in /opt/wheels)."""
    import glob

    return os.environ.get("TEXTOPS_TORCH_WHEEL") or next(
        iter(sorted(glob.glob("/opt/wheels/torch-*+cpu-*.whl"))), None
    )


def remove_images(images: list[str]) -> None:
    """`images`, and the untagged images a rebuild left, so that repeated runs on one machine do
    not fill its disk (an image is 1.4-2.6 GB)."""
    import subprocess

    for image in images:
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, check=False)
    if images:
        subprocess.run(["podman", "image", "prune", "-f"], capture_output=True, check=False)


@pytest.fixture
def podman_image():
    """Names the image a test builds; removed afterwards (remove_images)."""
    built: list[str] = []
    yield built.append
    remove_images(built)


def need_container_tools() -> None:
    """Skip where this machine cannot build and run images (failed under CI, whose .ci/run
    installs the tools): buildah and podman missing, or not root (buildah's chroot isolation
    and podman's runc containers)."""
    missing = [tool for tool in ("buildah", "podman") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (.ci/run installs Debian's)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() != 0:
        pytest.skip("buildah with chroot isolation and podman need root here")


@pytest.fixture(scope="module")
def pipeline_image():
    """The code location's image built from this checkout by scripts/build_pipeline_image.sh
    (which checks that its code server answers), once for the module's tests; removed when the
    module ends, before the next image is built (a disk fits one at a time). Yields its name and
    the build's output."""
    import subprocess

    need_container_tools()
    name = "textops-pipeline:test"
    root = Path(__file__).resolve().parents[1]
    try:
        build = subprocess.run(
            ["bash", "scripts/build_pipeline_image.sh", name],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=3000,
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        yield {"name": name, "build_output": build.stdout}
    finally:
        remove_images([name])


@pytest.fixture
def postgres_url():
    """A database of this test's own on the PostgreSQL server at $TEXTOPS_TEST_POSTGRES (which
    .ci/run starts), dropped afterwards."""
    import uuid

    server = os.environ.get("TEXTOPS_TEST_POSTGRES")
    if not server:
        message = (
            "no PostgreSQL server: set TEXTOPS_TEST_POSTGRES=postgresql://user:password@host:"
            "port/db of a role that may create databases (.ci/run starts Debian's postgresql)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import psycopg2

    name = f"textops_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def postgres_dagster_home(home: Path, url: str) -> Path:
    """A Dagster instance folder whose runs, events and schedules live in PostgreSQL, with the
    checkout's instance settings (the training pool)."""
    from tests.processes import write_dagster_yaml

    home.mkdir(parents=True, exist_ok=True)
    write_dagster_yaml(home)
    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; dagster-postgres brings psycopg2
    url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    with (home / "dagster.yaml").open("a") as settings:
        settings.write(f"storage:\n  postgres:\n    postgres_url: {url}\n")
    return home


@pytest.fixture
def copied_model_store(approved_graph, tmp_path, model_store_at):
    """A model store of the test's own (this process, and BENTOML_HOME for subprocesses it
    starts with it) holding copies, same tags, of the session's champion and of the model the
    session's Dagster instance recorded as served: gates run against it see what they would see
    in the session's store, and approve nothing into it."""
    import dagster as dg

    from textops_core.registry import approved_models

    home = tmp_path / "bentoml"
    (home / "models").mkdir(parents=True)
    events = [
        approved_graph["instance"].get_latest_materialization_event(dg.AssetKey(key))
        for key in ("approved_model", "served_model")  # served_model is newer after a rollback
    ]
    event = max((e for e in events if e is not None), key=lambda e: e.timestamp)
    recorded = event.asset_materialization.metadata["served_tag"].value
    for tag in {recorded, str(approved_models()[0].tag)}:
        copy_registered(tag, home)
    return model_store_at(home)


@pytest.fixture
def instance():
    """A Dagster instance of one test: materializations of several runs in one event log."""
    import dagster as dg

    return dg.DagsterInstance.ephemeral()


@pytest.fixture(scope="session")
def approved_graph(tmp_path_factory):
    """The graph through approved_model on tiny separable data, once per session: a real
    model that learned positive vs negative words, registered in the session's BentoML store."""
    import dagster as dg

    from orchestration.resources import LocalArtifactStore

    root = tmp_path_factory.mktemp("graph")
    source = write_tweeteval(root / "data", sizes=(160, 40, 40))
    store = LocalArtifactStore(root=str(root / "store"))
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_selected(
        store,
        THROUGH_APPROVAL,
        run_config=graph_run_config(source),
        instance=instance,
    )
    decision = result.output_for_node("approved_model")
    return {
        "store": store,
        "source": source,
        "result": result,
        "tag": decision.served_tag,
        "instance": instance,
        "splits": result.output_for_node("text_splits"),
    }
