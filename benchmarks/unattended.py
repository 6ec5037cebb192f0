"""A deployment left alone for a simulated month: the Dagster daemon (monitoring, drift and
new-data retraining, regression rollback) and `bentoml serve` following the registry, under
scripted traffic with drift episodes, landed files (some malformed), and faults on a schedule.
A simulated day lasts `--day-seconds` of real time; monitoring runs every minute over a window
of one simulated day, and the drift cooldown is one simulated day.

    python benchmarks/unattended.py                       # 30 days of 60 s
    python benchmarks/unattended.py --days 3 --json out.json   # the short form CI runs

Faults: the log folder removed, the log's disk full (a tmpfs of its own; needs root to mount,
else reported as not run), a registration killed while copying, a training step killed, the
whole service killed (restarted by the benchmark, as a supervisor would), and a source that
hangs (a server trickling one header line a second). Reported: requests failed by a side path
(answers other than 200 while the service was up), drift episodes retrained, approved and live
with no human, records lost from the log outside the log's own faults, the seconds to recover
from each fault, and the storage used at the end against the end of day 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, graph_run_config, tiny_rows, write_tweeteval  # noqa: E402
from tests.processes import BIN, bentoml_serve, running, stop, write_dagster_yaml  # noqa: E402

MONTH = {  # day -> events, for runs of 30 days and more
    2: ["land_good"],
    4: ["log_removed"],
    5: ["drift"],
    7: ["land_malformed"],
    9: ["disk_full"],
    11: ["registration_killed"],
    13: ["training_killed"],
    15: ["drift"],
    17: ["service_killed"],
    19: ["land_good"],
    21: ["hanging_source"],
    23: ["land_malformed"],
    25: ["drift"],
    27: ["log_removed", "service_killed"],
}
SHORT = {  # the short form: every kind of event in 3 days
    1: ["drift", "land_malformed", "log_removed"],
    2: ["service_killed", "registration_killed", "disk_full"],
    3: ["land_good", "training_killed", "hanging_source"],
}
RATE_PER_S = 4.0
RUN_QUEUE = {
    "max_concurrent_runs": 4,
    "tag_concurrency_limits": [{"key": "textops/job", "value": "retrain", "limit": 1}],
}  # the client's requests a second


def drifted_text(i: int) -> str:
    return f"LONG RANT {i}: " + " ".join(["ωμέγα 東京 ℵ∞"] * 12)


class Client:
    """One client at about RATE_PER_S requests a second, one text each (numbered, so every text
    is unique); records the time, the status and the model of each answer."""

    def __init__(self, url: str) -> None:
        self.url, self.drifting = url, False
        self.records: list[tuple[float, int, str, str]] = []  # time, status, model, text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rows, i = tiny_rows(400), 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                i += 1
                text = drifted_text(i) if self.drifting else f"{rows[i % 400][0]} #{i}"
                try:
                    answer = client.post(f"{self.url}/classify", json={"texts": [text]})
                    status = answer.status_code
                    model = answer.json()[0]["model"] if status == 200 else ""
                except (httpx.HTTPError, ValueError, KeyError):
                    status, model = 0, ""
                self.records.append((time.time(), status, model, text))
                time.sleep(1 / RATE_PER_S)

    def start(self) -> Client:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class Service:
    """`bentoml serve` restarted whenever it exits, as a supervisor (systemd, Kubernetes)
    would; records when it was down."""

    def __init__(self, env: dict, root: Path) -> None:
        self.env, self.root = env, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.down: list[tuple[float, float]] = []
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        self._start()
        threading.Thread(target=self._supervise, daemon=True).start()
        return self

    def _start(self) -> None:
        self.starts = getattr(self, "starts", 0) + 1
        log = self.root / f"serve-{self.starts}.log"
        self.process = self._stack.enter_context(
            running(bentoml_serve(self.port), self.env, log, f"{self.url}/readyz")
        )

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            if self.process.poll() is not None:
                went = time.time()
                self._start()
                self.down.append((went, time.time()))

    def kill(self) -> float:
        """SIGKILL to every process of the service, as when its container dies (its workers
        run in process groups of their own); the seconds until it answers again."""
        killed = time.time()
        tree = psutil.Process(self.process.pid)
        for process in [*tree.children(recursive=True), tree]:
            with contextlib.suppress(psutil.Error):
                process.kill()
        while not self.down or self.down[-1][0] < killed:
            time.sleep(0.2)
        return self.down[-1][1] - killed

    def close(self) -> None:
        self._stop.set()
        if self.process is not None:
            stop(self.process)
        self._stack.close()


@dataclass
class Month:
    root: Path
    days: int
    day_s: float
    env: dict = field(default_factory=dict)
    faults: list[dict] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)
    landed: list[dict] = field(default_factory=list)
    storage: dict[str, dict[str, int]] = field(default_factory=dict)
    still_running: int = 0  # runs the daemon was stopped in the middle of
    logged: set[str] = field(default_factory=set)  # every text in the log at the end
    logged_until: float = 0.0  # ... of the requests answered before this time

    @property
    def log_dir(self) -> Path:
        return self.root / "logfs" / "serving_log"


def environment(root: Path, day_s: float) -> dict:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    write_dagster_yaml(home)
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    settings["concurrency"]["runs"] = RUN_QUEUE  # a deployment's run queue (docs/deploy.md)
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    retrain = root / "retrain.yaml"
    config = graph_run_config(write_tweeteval(root / "data", sizes=(120, 40, 40)))
    retrain.write_text(yaml.safe_dump(config))
    (root / "landing").mkdir()
    day_hours = day_s / 3600
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TEXTOPS_HOME": str(root / "store"),
        "BENTOML_HOME": str(root / "bentoml"),
        "TEXTOPS_LANDING": str(root / "landing"),
        "TEXTOPS_LANDING_SETTLE_S": "1",
        "TEXTOPS_RETRAIN_CONFIG": str(retrain),
        "TEXTOPS_SERVING_LOG": str(root / "logfs" / "serving_log"),
        "TEXTOPS_MONITOR_CRON": "* * * * *",
        "TEXTOPS_MONITOR_WINDOW_HOURS": f"{day_hours:.6f}",
        "TEXTOPS_DRIFT_COOLDOWN_HOURS": f"{day_hours:.6f}",
        "TEXTOPS_PROBATION_HOURS": f"{day_hours:.6f}",
        "TEXTOPS_AUTOMATION": "monitoring_automation,regression_sensor,new_data_sensor,"
        "drift_sensor",
        "TEXTOPS_FOLLOW_INTERVAL_S": "2",
        "TEXTOPS_SHADOW_REQUESTS": "40",
        "TEXTOPS_WORKERS": "1",
        "TEXTOPS_THREADS": "1",
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }


def mount_log_disk(month: Month, megabytes: int = 64) -> bool:
    """The log's folder on a small file system of its own, so that it can be filled."""
    mount = month.log_dir.parent
    mount.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)],
        capture_output=True,
    )
    return done.returncode == 0


def dagster(env: dict, *args: str) -> None:
    subprocess.run([str(BIN / "dagster"), *args], cwd=ROOT, env=env, check=True, timeout=1800)


def instance(env: dict):
    import dagster as dg

    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def runs_since(env: dict, since: float, **tags: str) -> list:
    import dagster as dg

    found = instance(env).get_runs(filters=dg.RunsFilter(tags=tags) if tags else None)
    return [r for r in found if (instance(env).get_run_stats(r.run_id).launch_time or 0) >= since]


def unfinished_runs(env: dict) -> list:
    import dagster as dg

    return instance(env).get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))


def newest_log_record(log_dir: Path) -> float:
    files = list(log_dir.glob("predictions-*.jsonl")) if log_dir.is_dir() else []
    return max((f.stat().st_mtime for f in files), default=0.0)


def wait_until(condition, limit_s: float) -> float | None:
    """Seconds until `condition()` holds, None past `limit_s`."""
    started = time.time()
    while time.time() - started < limit_s:
        if condition():
            return time.time() - started
        time.sleep(0.5)
    return None


# --- events ---------------------------------------------------------------------------------


def drift(month: Month, client: Client, day_end: float) -> None:
    started = time.time()
    client.drifting = True
    month.episodes.append({"started": started, "model_before": served_now(client)})
    threading.Timer(
        max(day_end - time.time(), 1), lambda: setattr(client, "drifting", False)
    ).start()


def land(month: Month, good: bool) -> None:
    name = f"landed-{len(month.landed)}.csv"
    path = Path(month.env["TEXTOPS_LANDING"]) / name
    if good:
        rows = tiny_rows(20, offset=1000 + 20 * len(month.landed))
        labels = ["positive" if y == 0 else "negative" for _, y in rows]
        lines = [
            "text,label",
            *(f'"{t}",{label}' for (t, _), label in zip(rows, labels, strict=True)),
        ]
    else:
        lines = ["text,label", "a landed row,spam", "another,5000000"]
    path.write_text("\n".join(lines) + "\n")
    month.landed.append({"file": name, "good": good, "at": time.time()})


def log_removed(month: Month) -> dict:
    removed = time.time()
    shutil.rmtree(month.log_dir, ignore_errors=True)
    recovered = wait_until(lambda: newest_log_record(month.log_dir) > removed, 120)
    return {"fault": "log_removed", "recover_s": recovered}


def disk_full(month: Month, mounted: bool, hold_s: float) -> dict:
    if not mounted:
        return {"fault": "disk_full", "recover_s": None, "note": "not run: no tmpfs (needs root)"}
    ballast = month.log_dir.parent / "ballast"
    with ballast.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 20))
            out.flush()
    time.sleep(hold_s)
    freed = time.time()
    ballast.unlink()
    recovered = wait_until(lambda: newest_log_record(month.log_dir) > freed, 120)
    return {"fault": "disk_full", "recover_s": recovered, "held_s": hold_s}


KILLED_REGISTRATION = """
import shutil, sys, tempfile, time
from pathlib import Path
import bentoml
from textops_core.registry import latest_approved, publish_pending
served = latest_approved()
scratch = Path(tempfile.mkdtemp()) / "model"
shutil.copytree(served.path, scratch, ignore=shutil.ignore_patterns("model.yaml", "checksums.json"))
copytree = shutil.copytree
def hang(src, dst, *args, **kwargs):
    if ".textops-staging" in str(dst):
        print("copying", flush=True)
        time.sleep(600)
    return copytree(src, dst, *args, **kwargs)
shutil.copytree = hang
publish_pending(scratch, dict(served.info.labels), dict(served.info.metadata))
"""


def registration_killed(month: Month, client: Client) -> dict:
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_REGISTRATION],
        cwd=ROOT,
        env=month.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    process.stdout.readline()
    before = served_now(client)
    process.kill()
    process.wait()
    # nothing to recover: the service goes on with the model it had
    time.sleep(5)
    unchanged = served_now(client) == before
    return {"fault": "registration_killed", "recover_s": 0.0 if unchanged else None}


def training_killed(month: Month) -> dict:
    """A retrain started by landed data, its training step's process killed with SIGKILL; the
    seconds until a later run trains and the loop goes on (the next landed file)."""
    land(month, good=True)
    step = None
    deadline = time.time() + 900
    while step is None and time.time() < deadline:
        step = training_step(month.env)
        time.sleep(0.5)
    if step is None:
        return {"fault": "training_killed", "recover_s": None, "note": "no training step seen"}
    killed = time.time()
    time.sleep(3)  # into the training itself
    with contextlib.suppress(psutil.Error):
        psutil.Process(step).kill()
    land(month, good=True)  # the next data: a new run trains from the same checkpoints
    recovered = wait_until(
        lambda: any(
            r.status.value == "SUCCESS" and r.job_name == "retrain"
            for r in runs_since(month.env, killed)
        ),
        1200,
    )
    return {"fault": "training_killed", "recover_s": recovered}


def training_step(env: dict) -> int | None:
    """The process id of a fine_tuned_model step running now, from the runs' event logs."""
    import dagster as dg

    for run in unfinished_runs(env):
        started = {}
        for entry in instance(env).all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or event.step_key != "fine_tuned_model":
                continue
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[event.step_key] = event.pid
            elif event.event_type in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                started.pop(event.step_key, None)
        if started.get("fine_tuned_model"):
            return started["fine_tuned_model"]
    return None


class TricklingServer:
    """Accepts connections and sends one header line a second, for ever."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            connection, _ = self.socket.accept()
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    @staticmethod
    def _trickle(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            for i in range(3600):
                connection.sendall(f"X-Slow-{i}: 1\r\n".encode())
                time.sleep(1)


def hanging_source(month: Month) -> dict:
    """raw_texts on a source that never finishes its headers: the run must fail at the
    download deadline, not hang."""
    server = TricklingServer()
    env = {**month.env, "TEXTOPS_DOWNLOAD_DEADLINE_S": "10"}
    config = {"ops": {"raw_texts": {"config": {"source": f"http://127.0.0.1:{server.port}/d.csv"}}}}
    path = month.root / "hanging.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.time()
    done = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "orchestration.definitions",
         "--select", "raw_texts", "-c", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    failed_in = time.time() - started
    return {
        "fault": "hanging_source",
        "recover_s": failed_in if done.returncode != 0 else None,
        "note": "the run failed at the deadline (10 s) and its process start"
        if done.returncode != 0
        else "the run did not fail",
    }


def served_now(client: Client) -> str:
    answered = [r[2] for r in client.records[-20:] if r[1] == 200]
    return answered[-1] if answered else ""


# --- the month --------------------------------------------------------------------------------


def storage(month: Month) -> dict[str, int]:
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())

    parts = {
        "artifact_store": month.root / "store",
        "model_store": month.root / "bentoml",
        "dagster": month.root / "dagster_home",
        "serving_log": month.log_dir,
    }
    return {name: size(path) if path.exists() else 0 for name, path in parts.items()}


def outcome_of_episodes(month: Month, client: Client) -> None:
    import dagster as dg

    for episode in month.episodes:
        retrains = runs_since(month.env, episode["started"], **{"textops/trigger": "drift"})
        retrains = [r for r in retrains if r.job_name == "retrain"]
        episode["retrained"] = any(r.status == dg.DagsterRunStatus.SUCCESS for r in retrains)
        decisions = [
            e
            for r in retrains
            for e in instance(month.env)
            .get_records_for_run(r.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            .records
            if e.asset_key == dg.AssetKey("approved_model")
        ]
        tags = [
            d.asset_materialization.metadata["served_tag"].value
            for d in decisions
            if d.asset_materialization.metadata.get("approved")
            and d.asset_materialization.metadata["approved"].value
        ]
        episode["approved"] = bool(tags)
        episode["live"] = any(
            r[2] in tags for r in client.records if r[0] > episode["started"] and r[1] == 200
        )


def logged_texts(month: Month) -> set[str]:
    from assets.monitoring.log_window import read_serving_log

    return set(read_serving_log(str(month.log_dir))[0]["text"].drop_nulls().to_list())


def records_lost(month: Month, client: Client) -> dict[str, int]:
    """Answered texts the log does not hold, outside the log's own faults (where losing them,
    counted on /metrics, is the promise) and the service's restarts, from the last removal of
    the log folder on."""
    logged = month.logged
    log_faults = {"log_removed", "disk_full", "service_killed"}
    windows = [
        (f["at"], f["at"] + (f.get("held_s") or 0) + (f["recover_s"] or 120) + 2)
        for f in month.faults
        if f["fault"] in log_faults
    ]
    # removing the log folder deletes what it held: only what was answered after can be checked
    removed = max((f["at"] for f in month.faults if f["fault"] == "log_removed"), default=0.0)
    answered = [r for r in client.records if r[1] == 200 and removed < r[0] < month.logged_until]
    outside = [r for r in answered if not any(a - 1 <= r[0] <= b for a, b in windows)]
    return {
        "answered": len(answered),
        "checked": len(outside),
        "lost": sum(r[3] not in logged for r in outside),
    }


def side_path_failures(client: Client, service: Service) -> dict[str, int]:
    down = [(a - 1, b + 2) for a, b in service.down]
    failed = [r for r in client.records if r[1] != 200]
    while_down = [r for r in failed if any(a <= r[0] <= b for a, b in down)]
    return {
        "requests": len(client.records),
        "failed_while_up": len(failed) - len(while_down),
        "failed_while_restarting": len(while_down),
    }


def run(days: int, day_s: float, root: Path, drain_s: float = 300.0) -> dict:
    month = Month(root, days, day_s)
    month.env = environment(root, day_s)
    mounted = mount_log_disk(month)
    schedule = MONTH if days >= 30 else SHORT
    started = time.time()
    dagster(
        month.env, "job", "execute", "-m", "orchestration.definitions", "-j", "pipeline",
        "-c", month.env["TEXTOPS_RETRAIN_CONFIG"],
    )  # fmt: skip
    first_model_s = time.time() - started
    service = Service(month.env, root).start()
    client = Client(service.url).start()
    daemon_log = root / "dagster-daemon.log"
    daemon = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
    try:
        with running(daemon, month.env, daemon_log):
            for day in range(1, days + 1):
                day_end = time.time() + day_s
                for event in schedule.get(day, []):
                    at = time.time()
                    result = apply(event, month, client, service, day_end)
                    if result is not None:
                        month.faults.append({**result, "day": day, "at": at})
                        print(f"day {day}: {result}", flush=True)
                time.sleep(max(day_end - time.time(), 0))
                if day == 1:
                    month.storage["day_1"] = storage(month)
            # the runs the last days started may finish before the daemon stops
            wait_until(lambda: not unfinished_runs(month.env), drain_s)
            month.still_running = len(unfinished_runs(month.env))
            month.storage[f"day_{days}"] = storage(month)
        month.logged_until = time.time()
        time.sleep(5)  # the records answered by then reach the log
        month.logged = logged_texts(month)  # before its file system goes
    finally:
        client.close()
        service.close()
        if mounted:
            subprocess.run(["umount", "-l", str(month.log_dir.parent)], check=False)
    outcome_of_episodes(month, client)
    return report(month, client, service, first_model_s, time.time() - started)


def apply(event: str, month: Month, client: Client, service: Service, day_end: float):
    if event == "drift":
        return drift(month, client, day_end)
    if event in {"land_good", "land_malformed"}:
        return land(month, event == "land_good")
    if event == "log_removed":
        return log_removed(month)
    if event == "disk_full":
        return disk_full(month, month.log_dir.parent.is_mount(), hold_s=min(10.0, month.day_s / 4))
    if event == "registration_killed":
        return registration_killed(month, client)
    if event == "training_killed":
        return training_killed(month)
    if event == "service_killed":
        return {"fault": "service_killed", "recover_s": service.kill()}
    if event == "hanging_source":
        return hanging_source(month)
    raise ValueError(f"unknown event {event}")


def report(month: Month, client: Client, service: Service, first_model_s: float, wall_s: float):
    import dagster as dg

    runs = instance(month.env).get_runs()
    landed_runs = [r for r in runs if r.tags.get("textops/trigger") == "new-data"]
    return {
        "days": month.days,
        "day_seconds": month.day_s,
        "wall_s": round(wall_s, 1),
        "first_model_s": round(first_model_s, 1),
        "traffic": side_path_failures(client, service),
        "records": records_lost(month, client),
        "drift_episodes": [{k: v for k, v in e.items() if k != "started"} for e in month.episodes],
        "landed": {
            "files": len(month.landed),
            "malformed": sum(not f["good"] for f in month.landed),
            "runs": {
                s: sum(r.status.value == s for r in landed_runs) for s in ("SUCCESS", "FAILURE")
            },
        },
        "runs": {
            s.value: sum(r.status == s for r in runs)
            for s in (
                dg.DagsterRunStatus.SUCCESS,
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.QUEUED,  # left in the queue when the month ended
            )
        }
        | {"running_at_the_end": month.still_running},
        "faults": [{k: v for k, v in f.items() if k != "at"} for f in month.faults],
        "storage_bytes": month.storage,
        "served_models": sorted({r[2] for r in client.records if r[1] == 200}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--day-seconds", type=float, default=60.0)
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=300.0,
        help="after the last day, wait this long at most for the runs still going",
    )
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's folder")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="textops-month-"))
    try:
        result = run(args.days, args.day_seconds, root, args.drain_seconds)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
