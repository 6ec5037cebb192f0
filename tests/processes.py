"""Long-running commands under test (`dagster dev`, `dagster-daemon`, `bentoml serve`): each in
its own process group with default signal handling, output to a log file, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_dagster_yaml(home: Path) -> None:
    """The checkout's instance settings (the training pool) with telemetry and the new-user
    tour off: the Dagster instance of a deployment, under test."""
    shipped = (ROOT / ".dagster_home" / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(
        shipped + "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
    )


def bentoml_serve(port: int, service: str = "bento.service:TextClassifier") -> list[str]:
    """`bentoml serve` of the service (or another BentoML service) on 127.0.0.1:`port`."""
    return [str(BIN / "bentoml"), "serve", service, "--host", "127.0.0.1", "--port", str(port)]


def _default_signals() -> None:
    # A child started from a script may inherit ignored SIGINT/SIGTERM; reset them so that
    # stopping the process group stops it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after a minute."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_until_up(process: subprocess.Popen, url: str, log: Path, limit_s: float = 180) -> None:
    """Until `url` answers 200; the log's tail in the error when the process exits or it
    times out."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:2]} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {limit_s:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], log: Path, ready_url: str | None = None
) -> Iterator[subprocess.Popen]:
    """`command` running from the repository root (ready once `ready_url` answers), stopped
    on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    try:
        if ready_url:
            wait_until_up(process, ready_url, log)
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def two_worker_service(root: Path, tag: str, **settings: str) -> Iterator[dict]:
    """`bentoml serve` with 2 workers over a model store of its own at root/bentoml holding a
    copy of the registered model `tag`, logging to root/serving_log, with `settings` in its
    environment; yields its url, env, process, store home, log folder and output file."""
    from tests.conftest import copy_registered, free_port

    home = root / "bentoml"
    copy_registered(tag, home)
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "TEXTOPS_SERVING_LOG": str(root / "serving_log"),
        "TEXTOPS_WORKERS": "2",
        "TEXTOPS_THREADS": "1",
        **settings,
    }
    env.pop("TEXTOPS_MODEL_TAG", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output = root / "serve.log"
    with running(bentoml_serve(port), env, output, f"{url}/readyz") as server:
        yield {"url": url, "env": env, "server": server, "home": home,
               "log": root / "serving_log", "output": output}  # fmt: skip


def run_python(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python -c script *args` from the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_script(script: str, env: dict[str, str], *args: str) -> str:
    """stdout of `python -c script *args` from the repository root; raises when it fails."""
    done = run_python(script, env, *args)
    done.check_returncode()
    return done.stdout.strip()
