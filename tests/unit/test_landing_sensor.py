"""new_data_sensor on a real landing folder: it lists names, sizes and modification stamps
only, and starts a retrain for a file once that file has stopped changing."""

import builtins
import hashlib
import io
import json
import os
import time

import dagster as dg
import pytest

from assets.data.sources.landing import landed_files
from orchestration import automation, definitions

SETTLE_S = 0.2


def settle() -> None:
    time.sleep(SETTLE_S * 1.5)


@pytest.fixture
def landing(tmp_path, monkeypatch):
    folder = tmp_path / "landing"
    folder.mkdir()
    monkeypatch.setenv("TEXTOPS_LANDING", str(folder))
    monkeypatch.setenv(automation.LANDING_SETTLE_ENV, str(SETTLE_S))
    return folder


@pytest.fixture
def tick():
    """One sensor tick against one instance: (result, the cursor it leaves)."""
    instance = dg.DagsterInstance.ephemeral()
    sensor = next(s for s in definitions.SENSORS if s.name == "new_data_sensor")

    def evaluate(cursor: str | None = None):
        result = sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, instance=instance))
        return result, result.cursor

    return evaluate


def files_of(result) -> list[str]:
    return [r.tags["textops/files"] for r in result.run_requests]


def test_a_file_still_being_copied_is_picked_up_once_it_stops_changing(landing, tick):
    nothing, cursor = tick()
    assert not nothing.run_requests and f"no new files in {landing}" in nothing.skip_message

    with (landing / "batch.csv").open("w") as copy:
        copy.write("text,label\nhello,0\n")
        copy.flush()
        first, cursor = tick(cursor)
        assert not first.run_requests
        assert "waiting for 1" in first.skip_message and "batch.csv" in first.skip_message
        settle()  # longer than the settle time, but the copy is not done
        copy.write("bye,1\n")
        copy.flush()
        growing, cursor = tick(cursor)
        assert not growing.run_requests and "batch.csv" in growing.skip_message

    settle()
    done, cursor = tick(cursor)
    assert files_of(done) == ["batch.csv"]
    assert done.run_requests[0].tags["textops/trigger"] == "new-data"
    again, _ = tick(cursor)
    assert not again.run_requests and f"no new files in {landing}" in again.skip_message


def test_settling_counts_from_when_the_sensor_first_saw_the_version(landing):
    (landing / "batch.csv").write_text("text,label\nhello,0\n")
    t0 = time.time()
    first = automation.landing_tick(landed_files(str(landing)), {}, t0, 60)
    assert first.waiting == ["batch.csv"] and not first.ready
    # however old its mtime, a file first seen now waits the settle time from now
    os.utime(landing / "batch.csv", (t0 - 3600, t0 - 3600))
    moved = automation.landing_tick(landed_files(str(landing)), first.cursor, t0 + 59, 60)
    assert moved.waiting == ["batch.csv"]  # a new mtime is a new version: the wait restarts
    early = automation.landing_tick(landed_files(str(landing)), moved.cursor, t0 + 118, 60)
    assert early.waiting == ["batch.csv"] and not early.ready
    ready = automation.landing_tick(landed_files(str(landing)), early.cursor, t0 + 119, 60)
    assert list(ready.ready) == ["batch.csv"] and not ready.waiting


def test_several_settled_files_make_one_run_and_the_same_files_the_same_run_key(landing, tick):
    (landing / "a.csv").write_text("text,label\nhello,0\n")
    (landing / "b.jsonl").write_text('{"text": "x", "label": 1}\n')
    _, cursor = tick()
    settle()
    both, _ = tick(cursor)
    assert files_of(both) == ["a.csv,b.jsonl"]
    # a lost cursor: the same files in the same versions give the same run key, which
    # Dagster never runs twice
    _, lost = tick()
    settle()
    relisted, _ = tick(lost)
    assert relisted.run_requests[0].run_key == both.run_requests[0].run_key


@pytest.mark.parametrize(
    "name",
    [
        ".batch.csv",  # hidden; rsync's in-flight copy is `.batch.csv.XXXXXX`
        "_batch.csv",
        "_SUCCESS",
        "~$batch.csv",
        "batch.csv.tmp",
        "batch.csv.part",
        "batch.csv.partial",
        "batch.csv.crdownload",
        "batch.csv.gstmp",
        "batch.csv~",
        "batch.part.TMP",
        "notes.txt",
    ],
)
def test_hidden_and_temporary_files_are_never_picked_up(landing, tick, name):
    (landing / name).write_text("text,label\nhello,0\n")
    (landing / "nested").mkdir()
    (landing / "nested" / "deeper.csv").write_text("text,label\nhello,0\n")
    _, cursor = tick()
    settle()
    later, cursor = tick(cursor)
    assert not later.run_requests and f"no new files in {landing}" in later.skip_message
    assert json.loads(cursor)["pending"] == {}
    assert landed_files(str(landing)) == []  # raw_texts skips them too


def test_a_replaced_file_triggers_again_with_a_new_run_key(landing, tick):
    path = landing / "batch.csv"
    path.write_text("text,label\nhello,0\n")
    _, cursor = tick()
    settle()
    first, cursor = tick(cursor)
    assert files_of(first) == ["batch.csv"]

    # same size, other content, moved in whole: the stamp (mtime, inode) tells it apart
    staged = landing / ".batch.csv.incoming"
    staged.write_text("text,label\nhello,1\n")
    os.replace(staged, path)
    waiting, cursor = tick(cursor)
    assert not waiting.run_requests and "batch.csv" in waiting.skip_message
    settle()
    second, cursor = tick(cursor)
    assert files_of(second) == ["batch.csv"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert not tick(cursor)[0].run_requests


def test_the_sensor_never_opens_a_landed_file(landing, tick, monkeypatch):
    (landing / "batch.csv").write_text("text,label\nhello,0\n")
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def guarded(real):
        def opener(file, *args, **kwargs):
            if isinstance(file, str | os.PathLike) and str(landing) in os.fspath(file):
                raise AssertionError(f"the sensor opened {file}")
            return real(file, *args, **kwargs)

        return opener

    monkeypatch.setattr(builtins, "open", guarded(real_open))
    monkeypatch.setattr(io, "open", guarded(real_io_open))
    monkeypatch.setattr(os, "open", guarded(real_os_open))
    (listed,) = landed_files(str(landing))
    with pytest.raises(AssertionError, match="the sensor opened"):
        listed.read()  # the guard works: reading is what the asset does, later

    _, cursor = tick()
    settle()
    ready, _ = tick(cursor)
    assert files_of(ready) == ["batch.csv"]


def test_the_checksum_is_of_the_bytes_the_asset_read(landing):
    path = landing / "batch.csv"
    path.write_text("text,label\nhello,0\n")
    (listed,) = landed_files(str(landing))
    path.write_text("text,label\nhello,0\nbye,1\n")  # changed between listing and reading
    data = listed.read()
    assert data == path.read_bytes()
    assert listed.checksum == hashlib.sha256(data).hexdigest()


def test_a_cursor_of_the_first_format_counts_its_files_as_seen(landing, tick):
    (landing / "old.csv").write_text("text,label\nhello,0\n")
    (landing / "grown.csv").write_text("text,label\nhello,0\nbye,1\n")
    (landing / "new.csv").write_text("text,label\nhi,1\n")
    first_format = {
        "old.csv": {"size": (landing / "old.csv").stat().st_size, "checksum": "ab" * 32},
        "grown.csv": {"size": 3, "checksum": "cd" * 32},
        "gone.csv": {"size": 9, "checksum": "ef" * 32},
    }
    upgraded, cursor = tick(json.dumps(first_format))
    assert not upgraded.run_requests
    state = json.loads(cursor)
    assert state["format"] == automation.LANDING_CURSOR_FORMAT
    assert list(state["seen"]) == ["old.csv"]  # the same size: taken as already ingested
    assert sorted(state["pending"]) == ["grown.csv", "new.csv"]
    settle()
    ready, _ = tick(cursor)
    assert files_of(ready) == ["grown.csv,new.csv"]


def test_a_bad_settle_time_says_what_to_set(monkeypatch):
    monkeypatch.setenv(automation.LANDING_SETTLE_ENV, "soon")
    with pytest.raises(ValueError, match="TEXTOPS_LANDING_SETTLE_S=.soon.: Input should be"):
        automation.new_data_sensor(definitions.retrain)


def test_a_file_over_the_landing_cap_is_named_and_never_stops_the_others(
    landing, tick, monkeypatch
):
    monkeypatch.setenv("TEXTOPS_LANDING_MAX_BYTES", "100")
    (landing / "big.csv").write_text("text,label\n" + "a long tweet,0\n" * 10)  # 161 bytes
    _, cursor = tick()
    settle()
    alone, cursor = tick(cursor)
    assert not alone.run_requests
    assert alone.skip_message == (
        f"no new files in {landing}; 1 landed file(s) over the cap of 100 bytes "
        "(TEXTOPS_LANDING_MAX_BYTES) are not ingested: big.csv (161 bytes)"
    )
    (landing / "small.csv").write_text("text,label\nhello,0\n")
    _, cursor = tick(cursor)
    settle()
    ready, cursor = tick(cursor)
    assert files_of(ready) == ["small.csv"]

    monkeypatch.setenv("TEXTOPS_LANDING_MAX_BYTES", "1000")  # allowed now: new to the sensor
    _, cursor = tick(cursor)
    settle()
    allowed, _ = tick(cursor)
    assert files_of(allowed) == ["big.csv"]


def test_a_landed_file_that_grew_past_the_cap_after_listing_is_not_read_whole(landing):
    from assets.data.sources.landing import LandedFileTooLarge

    path = landing / "batch.csv"
    path.write_text("text,label\nhello,0\n")
    (listed,) = landed_files(str(landing))
    with pytest.raises(LandedFileTooLarge, match="batch.csv: 19 bytes, more than the cap of 10"):
        listed.read(10)
    path.write_text("text,label\nhello,0\n" * 100)
    with pytest.raises(LandedFileTooLarge) as grown:
        listed.read(100)
    assert str(grown.value).startswith(
        "batch.csv: more than 100 bytes, more than the cap of 100 bytes on a landed file; not "
        "ingested. Split it into smaller files, or set TEXTOPS_LANDING_MAX_BYTES"
    )


def test_a_bad_landing_cap_says_what_to_set(monkeypatch):
    monkeypatch.setenv("TEXTOPS_LANDING_MAX_BYTES", "2GB")
    with pytest.raises(ValueError, match="TEXTOPS_LANDING_MAX_BYTES='2GB': expected a positive"):
        automation.new_data_sensor(definitions.retrain)
