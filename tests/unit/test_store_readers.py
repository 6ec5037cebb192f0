"""Readers of the model store under any damage to any entry: a checksums.json or a model.yaml
of any content skips that entry, with a warning and a count, and never fails the reader or hides
the other entries. Property-based: Hypothesis writes the damage."""

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textops_core.registry import (
    CHECKSUMS_FILE,
    LOCK_TIMEOUT_ENV,
    MODEL_NAME,
    approved_entries,
    integrity_problems,
    lock_timeout_s,
    read_entries,
    skipped_entries,
    store_lock,
    write_checksums,
)

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def write_model(folder: Path, version: str, approved: str = "true", days_ago: int = 0) -> Path:
    """A model version as the store holds it: its files, checksums.json and model.yaml."""
    path = folder / MODEL_NAME / version
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"weights" * 100)
    write_checksums(path)
    created = datetime(2026, 12, 1, tzinfo=UTC).replace(day=1 + days_ago)
    info = {
        "name": MODEL_NAME,
        "version": version,
        "labels": {"approved": approved},
        "metadata": {"label_names": ["a", "b"]},
        "creation_time": created.isoformat(),
    }
    (path / "model.yaml").write_text(yaml.safe_dump(info))
    return path


@pytest.fixture
def store(tmp_path):
    """A models folder with an intact approved model and the entry a test damages."""
    write_model(tmp_path, "intact00000001")
    damaged = write_model(tmp_path, "damaged0000001", days_ago=5)  # the newer one
    return tmp_path, damaged


@PROPERTY
@given(content=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_checksums_file_is_a_problem_of_that_entry_never_an_exception(store, content):
    folder, damaged = store
    (damaged / CHECKSUMS_FILE).write_bytes(content)
    problems = integrity_problems(damaged, full=True)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    tags = [e.tag for e in approved_entries(folder)]
    assert f"{MODEL_NAME}:intact00000001" in tags
    if problems:
        assert tags == [f"{MODEL_NAME}:intact00000001"]
        assert f"{MODEL_NAME}:damaged0000001" in skipped_entries()


@PROPERTY
@given(
    content=st.binary(max_size=300)
    | JSON.map(lambda v: yaml.safe_dump(v).encode())
    | st.dictionaries(st.sampled_from(["labels", "metadata", "creation_time", "name"]), JSON).map(
        lambda v: yaml.safe_dump(v).encode()
    )
)
def test_any_model_yaml_skips_that_entry_and_keeps_the_others(store, content):
    folder, damaged = store
    (damaged / "model.yaml").write_bytes(content)
    entries = {e.tag: e for e in read_entries(folder)}
    assert f"{MODEL_NAME}:intact00000001" in entries
    for entry in entries.values():  # what is read is well-formed
        assert isinstance(entry.labels, dict) and isinstance(entry.metadata, dict)
        assert isinstance(entry.created, datetime) and entry.created.tzinfo is not None
    approved_entries(folder)  # sorting by creation time never fails either


@pytest.mark.parametrize(
    "checksums",
    [
        "{",
        "[]",
        "{}",
        "null",
        '{"model.onnx": {"sha256": "ab"}}',  # no size
        '{"model.onnx": {"size": true, "sha256": "' + "a" * 64 + '"}}',  # a bool is no size
        '{"model.onnx": {"size": -1, "sha256": "' + "a" * 64 + '"}}',
        '{"../../outside": {"size": 1, "sha256": "' + "a" * 64 + '"}}',
        '{"/etc/passwd": {"size": 1, "sha256": "' + "a" * 64 + '"}}',
        "[" * 100_000,  # nested past the parser's recursion limit
    ],
)
def test_each_damage_is_named_counted_and_skipped(store, checksums):
    folder, damaged = store
    (damaged / CHECKSUMS_FILE).write_text(checksums)
    (problem,) = integrity_problems(damaged)
    assert problem.startswith(f"{CHECKSUMS_FILE} ")
    assert [e.tag for e in approved_entries(folder)] == [f"{MODEL_NAME}:intact00000001"]
    assert skipped_entries()[f"{MODEL_NAME}:damaged0000001"].startswith("approved, but ")


def test_a_model_without_checksums_is_never_approved_by_a_reader(store):
    folder, damaged = store
    (damaged / CHECKSUMS_FILE).unlink()
    assert integrity_problems(damaged) == [
        f"{CHECKSUMS_FILE} is missing: its files cannot be verified"
    ]
    assert [e.tag for e in approved_entries(folder)] == [f"{MODEL_NAME}:intact00000001"]


def test_an_intact_store_skips_nothing(store):
    folder, _ = store
    tags = [e.tag for e in approved_entries(folder)]
    assert tags == [f"{MODEL_NAME}:damaged0000001", f"{MODEL_NAME}:intact00000001"]
    assert skipped_entries() == {}


@pytest.mark.parametrize("value", ["-1", "-0.5", "inf", "nan", "forever", "1e999"])
def test_a_lock_timeout_that_would_wait_forever_is_refused(monkeypatch, tmp_path, value):
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"{LOCK_TIMEOUT_ENV}=.{value}.: Input should be"):
        lock_timeout_s()
    with pytest.raises(ValueError, match=LOCK_TIMEOUT_ENV), store_lock(folder=tmp_path):
        pass


@pytest.mark.parametrize(("value", "seconds"), [("", 120.0), ("0", 0.0), ("2.5", 2.5)])
def test_a_lock_timeout_of_zero_or_more_is_read(monkeypatch, value, seconds):
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, value)
    assert math.isclose(lock_timeout_s(), seconds)
