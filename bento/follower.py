"""The thread in each service worker that keeps it on the deployment's live model: it reads the
rollout state every poll, loads and verifies the candidate and the live model off the request
path, switches the worker's model in one assignment, reports what it loaded and measured, and,
in the worker that holds the leader lock, reads the registry and decides
(textops_core/rollout.py)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from textops_core.live import NotServable, ServedModel, release_memory
from textops_core.registry import (
    MODEL_NAME,
    StoredEntry,
    approved_entries,
    read_entries,
    skipped_entries,
    withdraw,
)
from textops_core.rollout import (
    STATE_FILE,
    WITHDRAWN_BY,
    WORKERS_DIR,
    Champion,
    RolloutSettings,
    Stats,
    append_history,
    empty_state,
    live_workers,
    plan,
    read_state,
    write_json,
)

logger = logging.getLogger("textops.rollout")


class Meter:
    """What this worker measured per model: live answers, and shadow answers of a candidate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[str, Stats] = {}
        self.shadow: dict[str, Stats] = {}

    def answered(self, tag: str, latency_ms: float, labels: list[str]) -> None:
        with self.lock:
            self.live.setdefault(tag, Stats()).record(latency_ms, labels)

    def failed(self, tag: str) -> None:
        with self.lock:
            self.live.setdefault(tag, Stats()).failed()

    def shadowed(
        self, tag: str, ms: float, labels: list[str], live: list[str], live_ms: float
    ) -> None:
        with self.lock:
            self.shadow.setdefault(tag, Stats()).record(ms, labels, live, live_ms)

    def shadow_failed(self, tag: str) -> None:
        with self.lock:
            self.shadow.setdefault(tag, Stats()).failed()

    def snapshot(self, keep: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both tables for the tags in `keep` (the others are forgotten)."""
        from dataclasses import asdict

        with self.lock:
            for table in (self.live, self.shadow):
                for tag in set(table) - keep:
                    del table[tag]
            return (
                {t: asdict(s) for t, s in self.live.items()},
                {t: asdict(s) for t, s in self.shadow.items()},
            )


class Follower:
    """Keeps one worker on the deployment's live model. `load(tag, path, labels, metadata)`
    returns a verified ServedModel or raises NotServable; `switch(model)` makes it the one that
    answers; `shadow(model or None)` sets the candidate that answers in the background;
    `failed(tag, reason)` counts a model that could not be served."""

    def __init__(
        self,
        settings: RolloutSettings,
        models_folder: Path,
        current: ServedModel,
        load: Callable[[StoredEntry], ServedModel],
        switch: Callable[[ServedModel], None],
        shadow: Callable[[ServedModel | None], None],
        failed: Callable[[str, str], None],
        meter: Meter,
        skipped: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.models_folder = models_folder
        self.folder = settings.folder
        self.current = current
        self.models: dict[str, ServedModel] = {current.tag: current}
        self.failures: dict[str, str] = {}
        self._load, self._switch, self._shadow, self._failed = load, switch, shadow, failed
        self._skipped = skipped or (lambda entries: None)
        self.meter = meter
        self.pid = os.getpid()
        self._leader = None
        self._champion: Champion | None = None
        self._read_at = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rollout", daemon=True)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._loading: dict[str, Future] = {}
        self._last_error = -float("inf")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / WORKERS_DIR).mkdir(exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # --- every worker ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(time.time())
            except Exception:  # the rollout never takes a worker down; it says so, once a minute
                if time.monotonic() - self._last_error > 60:
                    self._last_error = time.monotonic()
                    logger.exception("rollout: this worker's step failed; it keeps serving")
            self._stop.wait(self.settings.poll_s)

    def tick(self, now: float) -> None:
        state = read_state(self.folder)
        if state is not None:
            self._follow(state)
        self._report(now, state)
        if self._lead():
            self._decide(now, state)

    def _follow(self, state: dict[str, Any]) -> None:
        live = state["live"]["tag"]
        if live != self.current.tag:
            model = self._get(live)
            if model is not None:
                self._switch(model)
                logger.info("now serving %s (was %s)", live, self.current.tag)
                self.current = model
        candidate = state.get("candidate")
        tag = candidate["tag"] if candidate else None
        model = self._get(tag) if tag else None
        self._shadow(model if candidate and candidate["phase"] == "shadow" else None)
        dropped = set(self.models) - {self.current.tag, tag}
        for old in dropped:
            del self.models[old]  # a model no longer live or candidate is let go
        if dropped:
            release_memory()
        self.failures = {t: why for t, why in self.failures.items() if t in {live, tag}}

    def _get(self, tag: str) -> ServedModel | None:
        """The loaded model `tag`; None while it loads (on a thread of its own, so that this
        worker keeps reporting) or when it cannot be served."""
        if tag in self.models:
            return self.models[tag]
        if tag in self.failures:
            return None
        loading = self._loading.get(tag)
        if loading is None:
            self._loading[tag] = self._loader.submit(self._load_entry, tag)
            return None
        if not loading.done():
            return None
        del self._loading[tag]
        try:
            model = loading.result()
        except NotServable as error:
            self.failures[tag] = str(error)
            self._failed(tag, str(error))
            logger.error("rollout: %s is not served: %s", tag, error)
            return None
        self.models[tag] = model
        return model

    def _load_entry(self, tag: str) -> ServedModel:
        entry = next((e for e in read_entries(self.models_folder) if e.tag == tag), None)
        if entry is None:
            raise NotServable(f"{tag} is not in {self.models_folder}")
        started = time.monotonic()
        try:
            model = self._load(entry)
        except NotServable:
            raise
        except Exception as error:  # whatever broke, the model is not served
            raise NotServable(f"{tag} could not be loaded: {error}") from None
        logger.info(
            "loaded %s (%s, %s) in %.1f s: %s",
            tag,
            model.variant,
            model.verified,
            time.monotonic() - started,
            model.why,
        )
        return model

    def _report(self, now: float, state: dict[str, Any] | None) -> None:
        keep = set(self.models)
        if state and state.get("candidate"):
            keep.add(state["candidate"]["tag"])
        live, shadow = self.meter.snapshot(keep | {self.current.tag})
        write_json(
            self.folder / WORKERS_DIR / f"{socket.gethostname()}-{self.pid}.json",
            {
                "pid": self.pid,
                "host": socket.gethostname(),
                "heartbeat": now,
                "serving": self.current.tag,
                "variant": self.current.variant,
                "ready": sorted(self.models),
                "loading": sorted(self._loading),
                "failed": self.failures,
                "live": live,
                "shadow": shadow,
            },
        )

    # --- the leader -----------------------------------------------------------------------

    def _lead(self) -> bool:
        if self._leader is None:
            from filelock import FileLock, Timeout

            lock = FileLock(self.folder / "leader.lock", thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return False
            self._leader = lock
            logger.info("rollout: this worker (pid %d) decides for the deployment", self.pid)
        return True

    def _decide(self, now: float, state: dict[str, Any] | None) -> None:
        reading = now - self._read_at >= self.settings.interval_s or self._champion is None
        # the live model gone from the store is checked when the registry is read, not each poll
        if state is None or (
            reading and not any(e.tag == state["live"]["tag"] for e in self._entries())
        ):
            state = empty_state(self.current.tag, now, "serving at start")
            write_json(self.folder / STATE_FILE, state)
            append_history(
                self.folder,
                [{"event": "live", "tag": self.current.tag, "reason": "serving at start"}],
                now,
            )
        if reading:
            self._champion = self._read_registry(state["live"]["tag"], state.get("rejected", {}))
            self._read_at = now
        stale_s = max(10 * self.settings.poll_s, 10.0)
        decided = plan(
            state, self._champion, live_workers(self.folder, now, stale_s), now, self.settings
        )
        for tag, reason in decided.withdraw:
            try:
                withdraw(tag, reason, WITHDRAWN_BY, MODEL_NAME, self.models_folder)
                self._read_at = -float("inf")  # read the registry again at the next step
            except Exception as error:  # a read-only store: the rejection stands here anyway
                logger.error("rollout: could not withdraw %s in the registry: %s", tag, error)
                decided.events.append(
                    {"event": "withdraw_failed", "tag": tag, "reason": str(error)}
                )
        if decided.state != state:
            write_json(self.folder / STATE_FILE, decided.state)
        append_history(self.folder, decided.events, now)
        for event in decided.events:
            logger.info("rollout: %s", event)

    def _entries(self) -> list[StoredEntry]:
        return read_entries(self.models_folder)

    def _read_registry(self, live: str, rejected: dict[str, str]) -> Champion:
        """The registry's champion as this deployment can serve it: the newest approved model
        it has not rejected (a model that failed to load here stays approved in the registry,
        and must not stop a rollback to an older one)."""
        approved = approved_entries(self.models_folder)
        self._skipped(skipped_entries())
        servable = [e for e in approved if e.tag not in rejected or e.tag == live]
        if not servable:
            return Champion(None, any(e.tag == live for e in approved), False, {})
        champion = servable[0]
        live_entry = next((e for e in self._entries() if e.tag == live), None)
        from textops_core.live import read_verification

        try:
            mix = (read_verification(champion.path) or {}).get("label_mix", {})
        except (OSError, ValueError):
            mix = {}
        return Champion(
            champion.tag,
            any(e.tag == live for e in approved),
            live_entry is None or champion.created > live_entry.created,
            mix,
        )
