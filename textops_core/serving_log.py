"""Append-only prediction log of the service, one JSON line per prediction.

The log is a side path: a write that fails (the folder deleted or replaced by a file, a full
disk, a read-only volume) is counted and warned about at most once a minute, and never reaches
the request. The next write tries again, recreating the folder if it is gone, so logging resumes
by itself once the fault goes.

Each batch is written with one `write`: a crash loses at most the batch being written, and a
torn last line is skipped by readers, so earlier records are never corrupted. Files roll over
per hour and writer, `predictions-YYYYMMDDHH-<host>-<pid>-<random>.jsonl`, so replicas sharing a
volume never write to one file and a reader picks a window's files by their names. Files are
private to the service's user (0600, folder 0700): with texts kept, the log holds what users
wrote, which is personal data. Retention: at each rollover the writer deletes files older than
the age limit, then the oldest files while the folder is over the size limit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from textops_core.settings import ServiceSettings, textops_home

LOG_DIR_ENV = "TEXTOPS_SERVING_LOG"
WARN_EVERY_S = 60.0

# predictions-<UTC hour>-<writer>.jsonl; older logs named the writer by its pid alone
FILE_NAME = re.compile(r"^predictions-(?P<hour>\d{10})-[^/]+\.jsonl$")
HOUR_FORMAT = "%Y%m%d%H"

logger = logging.getLogger("textops.serving_log")


def default_log_dir() -> Path | None:
    """$TEXTOPS_SERVING_LOG; `off` (or empty when set) disables logging. Unset: serving_log
    in textops' home folder, beside the pipeline's artifacts."""
    value = os.environ.get(LOG_DIR_ENV)
    if value is None:
        return Path(textops_home()) / "serving_log"
    if value.strip().lower() in {"", "off", "0", "false"}:
        return None
    return Path(value).expanduser()


@dataclass(frozen=True)
class Retention:
    """How much log a folder keeps: files older than `max_age_s`, then the oldest files while
    the folder holds more than `max_bytes`, are deleted."""

    max_age_s: float = ServiceSettings().serving_log_max_age_days * 86400
    max_bytes: int = int(ServiceSettings().serving_log_max_mb * 1e6)

    @classmethod
    def of(cls, settings: ServiceSettings) -> Retention:
        days, megabytes = settings.serving_log_max_age_days, settings.serving_log_max_mb
        return cls(days * 86400, int(megabytes * 1e6))


def file_hour(name: str) -> float | None:
    """Start of the UTC hour a log file holds (epoch seconds), from its name; None for a file
    that is not a prediction log."""
    match = FILE_NAME.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match["hour"], HOUR_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def writer_id() -> str:
    """This process's name in file names: host, pid and a random part (pids repeat across
    containers, and a host name alone repeats across a pod's restarts)."""
    host = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def prune(directory: Path, retention: Retention, now: float, keep: Path | None = None) -> int:
    """Apply `retention` to the log files in `directory`; returns how many were deleted.
    `keep` (the file being written) is never deleted. Files another replica deletes first are
    skipped."""
    files, total = [], 0
    for path in directory.iterdir():
        hour = file_hour(path.name)
        if hour is None:
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        total += size
        if path != keep:
            files.append((hour, path.name, path, size))
    files.sort()
    deleted = 0
    for hour, _name, path, size in files:
        too_old = hour + 3600 < now - retention.max_age_s
        if not too_old and total <= retention.max_bytes:
            break
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        total -= size
    return deleted


class ServingLog:
    """The prediction log of one service process. `append` never raises: a failed write is
    counted (`failed_records`, and `on_failure(records)` for the service's metric) and warned
    about at most once every `warn_every_s` seconds."""

    def __init__(
        self,
        directory: Path,
        log_text: bool = True,
        retention: Retention | None = None,
        on_failure: Callable[[int], None] | None = None,
        warn_every_s: float = WARN_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.log_text = log_text
        self.retention = retention or Retention()
        self.on_failure = on_failure
        self.warn_every_s = warn_every_s
        self.clock = clock
        self.writer = writer_id()
        self.written_records = 0
        self.failed_records = 0
        self._lock = threading.Lock()
        self._current: Path | None = None
        self._failing_since: float | None = None
        self._last_warning = -float("inf")
        self._failed_since_warning = 0

    def path_for(self, now: float) -> Path:
        hour = datetime.fromtimestamp(now, UTC).strftime(HOUR_FORMAT)
        return self.directory / f"predictions-{hour}-{self.writer}.jsonl"

    def append(
        self,
        model_tag: str,
        texts: list[str],
        labels: list[str],
        probabilities: list[dict[str, float]],
        latency_ms: float,
        request_id: str | None = None,
        shadow: bool = False,
    ) -> bool:
        """Log one request's predictions; False (counted, warned) when the write failed."""
        now = self.clock()
        lines = []
        for text, label, probs in zip(texts, labels, probabilities, strict=True):
            record: dict[str, Any] = {
                "ts": now,
                "model_tag": model_tag,
                "text_length": len(text),
                "label": label,
                "probabilities": probs,
                "latency_ms": latency_ms,
            }
            if request_id is not None:
                record["request_id"] = request_id
            if shadow:  # a candidate's answer, never returned to the client
                record["shadow"] = True
            if self.log_text:
                record["text"] = text
            lines.append(json.dumps(record, ensure_ascii=False))
        payload = ("\n".join(lines) + "\n").encode()
        with self._lock:
            try:
                self._write(self.path_for(now), payload, now)
            except OSError as error:
                self._failed(len(lines), error, now)
                return False
            self.written_records += len(lines)
            if self._failing_since is not None:
                logger.warning(
                    "prediction log at %s is writable again after %.0f s; logging resumed",
                    self.directory,
                    now - self._failing_since,
                )
                self._failing_since = None
                self._failed_since_warning = 0
            return True

    def _write(self, path: Path, payload: bytes, now: float) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except FileNotFoundError:  # the folder is gone (never made, deleted, rotated away)
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload  # a crash left a torn line: start a fresh one
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
        finally:
            os.close(fd)
        if path != self._current:
            self._current = path
            self._apply_retention(now)

    def _apply_retention(self, now: float) -> None:
        try:
            deleted = prune(self.directory, self.retention, now, keep=self._current)
        except OSError as error:
            logger.warning("prediction log retention at %s failed: %s", self.directory, error)
            return
        if deleted:
            logger.info(
                "prediction log retention deleted %d file(s) in %s", deleted, self.directory
            )

    def _failed(self, records: int, error: OSError, now: float) -> None:
        self.failed_records += records
        self._failed_since_warning += records
        if self._failing_since is None:
            self._failing_since = now
        if self.on_failure is not None:
            try:
                self.on_failure(records)
            except Exception:  # a metric must not turn a log fault into a failed prediction
                logger.debug("prediction log failure counter failed", exc_info=True)
        if now - self._last_warning >= self.warn_every_s:
            logger.warning(
                "prediction log write failed (%s: %s); %d record(s) not logged since the last "
                "warning, %d in all; predictions are answered and the next write tries again",
                type(error).__name__,
                error,
                self._failed_since_warning,
                self.failed_records,
            )
            self._last_warning = now
            self._failed_since_warning = 0
