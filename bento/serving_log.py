"""Append-only prediction log of the service, one JSON line per prediction.

Each batch is written with one `write` and flushed: a crash loses at most the batch being
written, and a torn last line is skipped by readers, so earlier records are never corrupted.
Files roll over per hour and process: `predictions-YYYYMMDDHH-<pid>.jsonl`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOG_DIR_ENV = "TEXTOPS_SERVING_LOG"
LOG_TEXT_ENV = "TEXTOPS_SERVING_LOG_TEXT"


def default_log_dir() -> Path | None:
    """$TEXTOPS_SERVING_LOG; `off` (or empty when set) disables logging. The default mirrors
    the pipeline's TEXTOPS_HOME rule here because the service never imports the pipeline."""
    value = os.environ.get(LOG_DIR_ENV)
    if value is None:
        home = os.environ.get("TEXTOPS_HOME") or (
            str(Path(os.environ["DAGSTER_HOME"]) / "textops")
            if os.environ.get("DAGSTER_HOME")
            else str(Path.home() / ".textops")
        )
        return Path(home) / "serving_log"
    if value.strip().lower() in {"", "off", "0", "false"}:
        return None
    return Path(value).expanduser()


class ServingLog:
    def __init__(self, directory: Path, log_text: bool = True) -> None:
        self.directory = directory
        self.log_text = log_text
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, now: float) -> Path:
        hour = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H")
        return self.directory / f"predictions-{hour}-{os.getpid()}.jsonl"

    def append(
        self,
        model_tag: str,
        texts: list[str],
        labels: list[str],
        probabilities: list[dict[str, float]],
        latency_ms: float,
    ) -> None:
        now = time.time()
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
            if self.log_text:
                record["text"] = text
            lines.append(json.dumps(record, ensure_ascii=False))
        payload = ("\n".join(lines) + "\n").encode()
        with self._lock, self._path(now).open("ab+") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    payload = b"\n" + payload  # a crash left a torn line: start a fresh one
            handle.write(payload)
            handle.flush()
