"""Rollouts under steady traffic: `bentoml serve` following the registry (its default settings
unless given), closed-loop clients sending tweets, while new models are approved and rolled back
in turn. For every switch: the seconds from the approval (or the withdrawal) to the first answer
of the new model, the failed requests, and the p99 latency of the requests around it against the
steady state before the first switch; and the service's peak memory (every process of it) while
two models are loaded against one.

    python benchmarks/rollout.py --switches 5 --clients 2
    python benchmarks/rollout.py --model-tag textops-classifier:<version>

The models approved are copies of the newest approved model of this BentoML store (same size
and speed), published into a store of the benchmark's own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import Server, tweets  # noqa: E402

PUBLISH = """
import shutil, sys, tempfile
from pathlib import Path
import bentoml
from textops_core.registry import approve, publish_pending
served = bentoml.models.get(sys.argv[1])
scratch = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(served.path, scratch, ignore=shutil.ignore_patterns("model.yaml", "checksums.json"))
tag = publish_pending(scratch, dict(served.info.labels), dict(served.info.metadata))
print(tag, flush=True)
sys.stdin.readline()  # approved when the benchmark says so, so that the clock starts there
approve(tag)
"""
WITHDRAW = """
import sys
from textops_core.registry import withdraw
withdraw(sys.argv[1], "benchmark rollback", "benchmark")
"""


class Clients:
    """Closed-loop clients, one tweet per request; every request's end time, latency, status
    and the model that answered."""

    def __init__(self, url: str, texts: list[str], count: int) -> None:
        self.url, self.texts = url, texts
        self.records: list[tuple[float, float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]

    def _run(self, offset: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = offset
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.post(
                        f"{self.url}/classify", json={"texts": [self.texts[i % len(self.texts)]]}
                    )
                    status = response.status_code
                    model = response.json()[0]["model"] if status == 200 else ""
                except httpx.HTTPError:
                    status, model = 0, ""
                self.records.append(
                    (time.time(), (time.perf_counter() - started) * 1000, status, model)
                )
                i += len(self._threads)

    def first_answer_from(self, tag: str, after: float, limit_s: float = 900) -> float:
        deadline = time.time() + limit_s
        while time.time() < deadline:
            for end, _, _, model in list(self.records):
                if end > after and model == tag:
                    return end
            time.sleep(0.05)
        raise TimeoutError(f"{tag} never answered within {limit_s:.0f} s")

    def window(self, start: float, end: float) -> list[tuple[float, float, int, str]]:
        return [r for r in self.records if start <= r[0] <= end]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


class Memory:
    """The service's resident memory, every process of it, sampled five times a second."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.samples.append((time.time(), total / 1e6))
            time.sleep(0.2)

    def peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=float("nan"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def phases(home: Path, tag: str, started: float) -> dict[str, float]:
    """Seconds from the approval (or withdrawal) to the deciding worker reading it, from there to
    every worker having loaded and verified it, and to its promotion (shadow included)."""
    from textops_core.rollout import read_history

    events = [e for e in read_history(home / "textops-rollout" / "default") if e["ts"] >= started]
    at = {e["event"]: e["ts"] for e in events if e.get("tag") == tag}
    nan = float("nan")
    loaded = at.get("shadow", at.get("live", nan))
    return {
        "noticed_s": at.get("loading", nan) - started,
        "loaded_s": loaded - at.get("loading", nan),
        "promoted_s": at.get("live", nan) - loaded,
    }


def p99(records) -> float:
    latencies = [r[1] for r in records if r[2] == 200]
    return float(np.percentile(latencies, 99)) if latencies else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=5, help="approvals and rollbacks, in turn")
    parser.add_argument("--clients", type=int, default=2, help="closed-loop clients")
    parser.add_argument("--steady-seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-tag", default="", help="the model copied (default: the newest)")
    args = parser.parse_args()

    from textops_core.registry import models_dir, serving_tag

    tag = args.model_tag or serving_tag()
    home = Path(tempfile.mkdtemp(prefix="textops-rollout-bench-"))
    version = tag.split(":")[1]
    shutil.copytree(
        models_dir() / "textops-classifier" / version,
        home / "models" / "textops-classifier" / version,
    )
    env = {
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "TEXTOPS_SERVING_LOG": str(home / "serving_log"),
        "TEXTOPS_WORKERS": str(args.workers),
        "TEXTOPS_MODEL_TAG": "",
    }
    child_env = {**os.environ, **env}
    command = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        "bento.service:TextClassifier",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]
    prefixes = ("TEXTOPS_FOLLOW", "TEXTOPS_SHADOW", "TEXTOPS_ROLLOUT")
    settings = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    print(
        f"service: {args.workers} workers, {args.clients} clients, rollout settings "
        f"{settings or 'default'}"
    )
    rows, served, previous = [], tag, None
    try:
        with (
            Server(command, env, "/readyz") as server,
            Clients(server.url, tweets(), args.clients) as clients,
            Memory(server.process.pid) as memory,
        ):
            time.sleep(args.steady_seconds)
            steady_end = time.time()
            steady = clients.window(steady_end - args.steady_seconds, steady_end)
            one_model_mb = memory.peak(steady_end - args.steady_seconds, steady_end)
            for n in range(args.switches):
                if n % 2 == 0:  # approve a new model
                    publisher = subprocess.Popen(
                        [sys.executable, "-c", PUBLISH, served],
                        cwd=ROOT,
                        env=child_env,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    new = publisher.stdout.readline().strip()
                    started = time.time()
                    publisher.communicate("go\n", timeout=120)
                    kind = "approval"
                    previous, target = served, new
                else:  # roll it back
                    started = time.time()
                    subprocess.run(
                        [sys.executable, "-c", WITHDRAW, served],
                        cwd=ROOT,
                        env=child_env,
                        check=True,
                        timeout=120,
                    )
                    kind, target = "rollback", previous
                live = clients.first_answer_from(target, started)
                time.sleep(3)  # the other workers' switch and what follows it
                around = clients.window(started, live + 3)
                rows.append(
                    {
                        **phases(home, target, started),
                        "kind": kind,
                        "to_live_s": live - started,
                        "failed": sum(r[2] != 200 for r in around),
                        "requests": len(around),
                        "p99_ms": p99(around),
                        "peak_mb": memory.peak(started, live + 3),
                    }
                )
                served = target
                print(f"switch {n + 1}: {kind} live in {live - started:.1f} s", flush=True)
            settled = time.time()
            time.sleep(args.steady_seconds)
            after_mb = memory.peak(settled + 5, time.time())
            failed_total = sum(r[2] != 200 for r in clients.records)
            total = len(clients.records)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    steady_p99 = p99(steady)
    print()
    print(
        f"steady state before the first switch: {len(steady)} requests, p99 {steady_p99:.1f} ms, "
        f"peak memory {one_model_mb:.0f} MB (one model)"
    )
    print(
        "| switch | to live (s) | noticed / loaded / shadow (s) | requests around it | failed "
        "| p99 around it (ms) | p99 steady (ms) | peak memory (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, row in enumerate(rows, 1):
        print(
            f"| {i}: {row['kind']} | {row['to_live_s']:.1f} | {row['noticed_s']:.1f} / "
            f"{row['loaded_s']:.1f} / {row['promoted_s']:.1f} | {row['requests']} | "
            f"{row['failed']} | {row['p99_ms']:.1f} | {steady_p99:.1f} | {row['peak_mb']:.0f} |"
        )
    print()
    for kind in ("approval", "rollback"):
        times = [r["to_live_s"] for r in rows if r["kind"] == kind]
        if times:
            print(
                f"{kind} to live: median {statistics.median(times):.1f} s, "
                f"max {max(times):.1f} s over {len(times)}"
            )
    print(
        f"failed requests: {failed_total} of {total}; peak memory with two models "
        f"{max(r['peak_mb'] for r in rows):.0f} MB vs {one_model_mb:.0f} MB with one before the "
        f"first switch and {after_mb:.0f} MB after the last"
    )


if __name__ == "__main__":
    main()
