"""`bentoml serve` left alone: a prediction log that breaks never fails a prediction and
recovers by itself, and with following off (TEXTOPS_FOLLOW=off) every worker, restarted or not,
serves the one model the deployment resolved at start."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from assets.monitoring.log_window import read_serving_log
from tests.processes import run_script, two_worker_service
from tests.traffic import Traffic, wait_for

WORKER = "_bentoml_impl.worker.service"


@pytest.fixture(scope="module")
def deployment(approved_graph, tmp_path_factory):
    """Two service processes over a model store of their own, logging to a folder of their
    own."""
    root = tmp_path_factory.mktemp("unattended")
    with two_worker_service(root, approved_graph["tag"], TEXTOPS_FOLLOW="off") as service:
        yield service


def tweet(i: int) -> list[str]:
    return [f"@user tweet {i}: such a wonderful day"]


def logged_texts(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return set(read_serving_log(folder)[0]["text"].drop_nulls().to_list())


def failed_records(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(
        r'^textops_prediction_log_failed_records_total\{reason="write_error"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return sum(float(value) for value in found)


def test_a_broken_prediction_log_never_fails_a_prediction_and_recovers(deployment):
    url, log = deployment["url"], deployment["log"]
    with Traffic(url, tweet) as before:
        wait_for(lambda: len(before.sent) > 20, what="traffic")
    wait_for(lambda: set(before.sent[:20]) <= logged_texts(log), what="the log's first records")

    # the folder replaced by a plain file in the middle of traffic
    with Traffic(url, tweet) as broken:
        time.sleep(1)
        replace_with_a_file(log)
        during = len(broken.sent)
        wait_for(lambda: len(broken.sent) > during + 40, what="traffic on a broken log")
        lost = wait_for(lambda: failed_records(url), what="the failure counter")
        # ... then removed: the next write recreates the folder
        log.unlink()
        after = len(broken.sent)
        wait_for(lambda: len(broken.sent) > after + 40, what="traffic after the fault")
    assert set(broken.statuses) == {200} and set(before.statuses) == {200}
    assert lost > 0
    resumed = wait_for(
        lambda: set(broken.sent[after + 5 : after + 40]) <= logged_texts(log),
        what="logging to resume",
    )
    assert resumed
    assert broken.sent[during + 10] not in logged_texts(log)  # lost while broken, not queued


def replace_with_a_file(folder: Path) -> None:
    """`folder` replaced by a plain file, while the service may recreate it at any moment."""
    staged = folder.with_name("plain-file")
    staged.write_text("a file where the log folder was")
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(staged, folder)
            return
        except OSError:  # a write recreated the folder in between: remove it again
            continue


def worker_pids(server: subprocess.Popen) -> set[int]:
    pids = set()
    for child in psutil.Process(server.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and WORKER in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:  # gone, or a zombie not reaped yet
            continue
    return pids


APPROVE_A_NEWER_MODEL = """
import shutil, sys, tempfile
from pathlib import Path
import bentoml
from textops_core.registry import approve, publish_pending

served = bentoml.models.get(sys.argv[1])
scratch = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(served.path, scratch, ignore=shutil.ignore_patterns("model.yaml"))
tag = publish_pending(scratch, dict(served.info.labels), dict(served.info.metadata))
approve(tag)
print(tag)
"""


def test_every_worker_serves_the_tag_resolved_at_start(deployment, approved_graph):
    url, env, served = deployment["url"], deployment["env"], approved_graph["tag"]
    assert httpx.post(f"{url}/model", json={}, timeout=30).json()["tag"] == served
    newer = run_script(APPROVE_A_NEWER_MODEL, env, served)
    assert newer != served  # the store's newest approved model is another one now
    before = wait_for(
        lambda: len(worker_pids(deployment["server"])) == 2 and worker_pids(deployment["server"]),
        what="two workers",
    )
    killed = min(before)
    os.kill(killed, signal.SIGKILL)
    restarted = wait_for(
        lambda: (worker_pids(deployment["server"]) - before) or None,
        limit_s=120,
        what="the killed worker's restart",
    ).pop()
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, what="ready")

    # traffic until the restarted worker has answered some of it
    log = deployment["log"]
    with Traffic(url, tweet) as traffic:
        wait_for(
            lambda: any(f"-{restarted}-" in p.name for p in log.glob("predictions-*.jsonl")),
            limit_s=60,
            what="a prediction from the restarted worker",
        )
        time.sleep(1)
    assert set(traffic.statuses) == {200}
    frame = read_serving_log(log)[0]
    assert frame["model_tag"].unique().to_list() == [served]
    cards = {httpx.post(f"{url}/model", json={}, timeout=30).json()["tag"] for _ in range(20)}
    assert cards == {served}
