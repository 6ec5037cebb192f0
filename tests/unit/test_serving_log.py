import json
import logging
import os
import pathlib
import stat
import time
from datetime import UTC, datetime

import pytest

from assets.monitoring.log_window import (
    latency_percentiles,
    read_serving_log,
    read_window,
    window_files,
)
from textops_core.serving_log import Retention, ServingLog, file_hour, prune
from textops_core.settings import service_settings

HOUR = 3600.0
NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC).timestamp()


def append(log, text="good day", tag="m:1", latency=12.5, request_id=None):
    return log.append(tag, [text], ["pos"], [{"pos": 0.9, "neg": 0.1}], latency, request_id)


def test_records_round_trip_and_a_torn_line_is_skipped(tmp_path):
    log = ServingLog(tmp_path)
    log.append(
        "m:1",
        ["good day", "bad day"],
        ["pos", "neg"],
        [{"pos": 0.9, "neg": 0.1}, {"pos": 0.2, "neg": 0.8}],
        12.5,
        "r1",
    )
    path = next(tmp_path.glob("predictions-*.jsonl"))
    with path.open("ab") as handle:
        handle.write(b'{"ts": 1, "model_tag": "m:1", "te')  # a crash in the middle of a write
    frame, torn = read_serving_log(tmp_path)
    assert torn == 1
    assert frame["text"].to_list() == ["good day", "bad day"]
    assert frame["label"].to_list() == ["pos", "neg"]
    assert frame["text_length"].to_list() == [8, 7]
    assert frame["request_id"].to_list() == ["r1", "r1"]
    assert frame["probabilities"][0] == '{"pos":0.9,"neg":0.1}'
    log.append("m:1", ["later"], ["pos"], [{"pos": 1.0, "neg": 0.0}], 3.0)
    frame, torn = read_serving_log(tmp_path)
    assert frame.height == 3  # records written after the torn line are readable too


def test_text_can_be_kept_out_of_the_log(tmp_path):
    ServingLog(tmp_path, log_text=False).append("m:1", ["secret"], ["pos"], [{"pos": 1.0}], 1.0)
    frame, _ = read_serving_log(tmp_path)
    assert frame["text"].to_list() == [None] and frame["text_length"].to_list() == [6]
    assert b"secret" not in next(tmp_path.glob("*.jsonl")).read_bytes()


def test_log_files_are_private_and_named_by_hour_host_and_process(tmp_path):
    folder = tmp_path / "log"
    one, two = ServingLog(folder, clock=lambda: NOW), ServingLog(folder, clock=lambda: NOW)
    append(one)
    append(two)
    files = sorted(folder.iterdir())
    assert len(files) == 2  # two writers in one process (two replicas, one pid) never share
    for path in files:
        assert path.name.startswith("predictions-2026113012-")
        assert f"-{os.getpid()}-" in path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert file_hour(path.name) == NOW - 30 * 60
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_failed_write_is_counted_warned_once_a_minute_and_never_raised(tmp_path, caplog):
    now = [NOW]
    failures = []
    folder = tmp_path / "log"
    log = ServingLog(folder, clock=lambda: now[0], on_failure=failures.append)
    assert append(log)
    # the folder replaced by a plain file (a cleaner, a bad rotation)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    folder.write_text("not a folder")
    caplog.set_level(logging.WARNING, "textops.serving_log")
    results = []
    for _ in range(5):
        now[0] += 10
        results.append(append(log))
    assert results == [False] * 5
    assert log.failed_records == 5 and failures == [1] * 5
    warnings = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(warnings) == 1  # 40 s of failures: one warning
    now[0] += 61
    assert not append(log)
    warnings = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(warnings) == 2
    assert "5 record(s) not logged since the last warning, 6 in all" in warnings[-1].getMessage()
    # the fault goes: the folder is recreated and logging resumes by itself
    folder.unlink()
    assert append(log, text="after the fault")
    assert "logging resumed" in caplog.records[-1].getMessage()
    frame, _ = read_serving_log(folder)
    assert frame["text"].to_list() == ["after the fault"]


def test_retention_deletes_old_files_then_the_oldest_over_the_size_limit(tmp_path):
    def write(hours_ago, size):
        hour = datetime.fromtimestamp(NOW - hours_ago * HOUR, UTC).strftime("%Y%m%d%H")
        path = tmp_path / f"predictions-{hour}-h-1-aa.jsonl"
        path.write_bytes(b"x" * size)
        return path

    ancient = write(24 * 40, 10)
    old, middle, new = write(30, 400), write(20, 400), write(1, 400)
    other = tmp_path / "notes.txt"
    other.write_text("not a log")
    deleted = prune(tmp_path, Retention(max_age_s=30 * 86400, max_bytes=900), NOW, keep=new)
    assert deleted == 2
    assert not ancient.exists() and not old.exists()
    assert middle.exists() and new.exists() and other.exists()
    # the file being written is never deleted, even alone over the limit
    assert prune(tmp_path, Retention(max_age_s=86400, max_bytes=1), NOW, keep=new) == 1
    assert new.exists() and not middle.exists()


def test_retention_runs_when_a_writer_rolls_over(tmp_path):
    now = [NOW]
    log = ServingLog(tmp_path, retention=Retention(max_age_s=2 * HOUR), clock=lambda: now[0])
    append(log)
    first = next(tmp_path.iterdir())
    now[0] += 4 * HOUR  # a new hour, a new file: the first is past the age limit
    append(log)
    assert not first.exists() and len(list(tmp_path.iterdir())) == 1


def test_retention_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEXTOPS_SERVING_LOG_MAX_AGE_DAYS", "7")
    monkeypatch.setenv("TEXTOPS_SERVING_LOG_MAX_MB", "500")
    assert Retention.of(service_settings()) == Retention(7 * 86400, 500_000_000)
    monkeypatch.setenv("TEXTOPS_SERVING_LOG_MAX_MB", "lots")
    with pytest.raises(ValueError, match="TEXTOPS_SERVING_LOG_MAX_MB='lots': Input should be a"):
        service_settings()


def test_a_window_reads_only_the_files_of_its_hours(tmp_path):
    for hours_ago in range(0, 72, 1):
        log = ServingLog(tmp_path, clock=lambda h=hours_ago: NOW - h * HOUR)
        append(log, text=f"{hours_ago} hours ago", request_id=str(hours_ago))
    since = NOW - 5 * HOUR - 60
    chosen = window_files(str(tmp_path), since)
    assert len(chosen) == 6  # the hours from 5 h 01 min ago to now, the first one partial
    read = read_window(str(tmp_path), since)
    assert read.files == 6
    assert read.frame["text"].to_list() == [f"{h} hours ago" for h in range(5, -1, -1)]
    # files of older writers (hour and pid only) are read the same way
    legacy = {
        "ts": NOW,
        "model_tag": "m:0",
        "text_length": 3,
        "label": "pos",
        "probabilities": {"pos": 1.0},
        "latency_ms": 1.0,
    }
    (tmp_path / "predictions-2026113012-4242.jsonl").write_text(json.dumps(legacy) + "\n")
    assert read_window(str(tmp_path), since).frame.height == 7
    assert read_window(str(tmp_path), since).files == 7


def test_reading_a_window_does_not_read_older_files(tmp_path, monkeypatch):
    for hours_ago in (0, 1, 500):
        append(ServingLog(tmp_path, clock=lambda h=hours_ago: NOW - h * HOUR))
    opened = []
    original = pathlib.Path.read_bytes

    def spy(self):
        opened.append(self.name)
        return original(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", spy)
    read_window(str(tmp_path), NOW - 2 * HOUR)
    assert len(opened) == 2 and not any("20261109" in name for name in opened)


def test_latency_percentiles_count_each_request_once():
    import polars as pl

    frame = pl.DataFrame(
        {
            "model_tag": ["a"] * 12 + ["b"],
            "request_id": ["big"] * 10 + ["r1", "r2", None],
            "latency_ms": [500.0] * 10 + [10.0, 20.0, 7.0],
        }
    )
    latency = latency_percentiles(frame)
    assert latency["a"]["requests"] == 3  # ten texts of one request count once
    assert latency["a"]["p50"] == 20.0
    assert latency["b"] == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "requests": 1.0}


def test_a_deleted_log_folder_is_recreated_by_the_next_write(tmp_path):
    folder = tmp_path / "log"
    log = ServingLog(folder)
    append(log)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    assert append(log, text="after rotation")
    assert read_serving_log(folder)[0]["text"].to_list() == ["after rotation"]


def test_logging_costs_no_time_when_writes_fail(tmp_path):
    (tmp_path / "log").write_text("a file where the folder should be")
    log = ServingLog(tmp_path / "log")
    started = time.perf_counter()
    for _ in range(100):
        append(log)
    assert log.failed_records == 100
    assert time.perf_counter() - started < 5  # a failing disk never stalls the caller


def test_a_shadow_record_far_into_a_file_keeps_its_flag():
    """polars infers a file's columns from its first rows; a candidate's shadow answer further
    down must not pass for an answer a client got."""
    import json

    from assets.monitoring.log_window import parse_log

    answered = {"ts": 1.0, "model_tag": "m:1", "label": "a", "probabilities": {"a": 1.0}}
    lines = [json.dumps(answered)] * 500
    lines.append(json.dumps({**answered, "model_tag": "m:2", "shadow": True}))
    frame, torn = parse_log(("\n".join(lines) + "\n").encode())
    assert torn == 0 and frame.height == 501
    assert frame.filter(frame["shadow"].fill_null(False))["model_tag"].to_list() == ["m:2"]
