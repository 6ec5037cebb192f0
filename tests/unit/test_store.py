import polars as pl
import pytest

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.store import default_home
from orchestration.resources import LocalArtifactStore


def test_parquet_and_json_round_trip(store):
    frame = pl.DataFrame({"text": ["a"], "label": [1]})
    store.write_parquet("x/v1/data.parquet", frame)
    assert store.read_parquet("x/v1/data.parquet").equals(frame)
    store.write_json("x/v1/info.json", {"version": "v1"})
    assert store.read_json("x/v1/info.json") == {"version": "v1"}


def test_missing_artifact_is_named(store):
    with pytest.raises(MissingArtifactError, match="x/v2/data.parquet does not exist"):
        store.read_parquet("x/v2/data.parquet")


def test_failed_write_keeps_the_previous_object(store, monkeypatch):
    store.write_bytes("a/b.bin", b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("a/b.bin", b"new")
    monkeypatch.undo()
    assert store.read_bytes("a/b.bin") == b"old"
    assert [p.name for p in (store.local_dir("a")).iterdir()] == ["b.bin"]  # no temp file left


def test_upload_dir_replaces_a_folder_whole(store, tmp_path):
    for version in ("one", "two"):
        src = tmp_path / version
        src.mkdir()
        (src / "weights.safetensors").write_text(version)
        store.upload_dir("model/current", src)
    assert (store.local_dir("model/current") / "weights.safetensors").read_text() == "two"
    assert [p.name for p in store.local_dir("model").iterdir()] == ["current"]
    assert store.children("model") == ["current"]
    assert store.children("model/current") == ["weights.safetensors"]
    assert store.children("absent") == []


def test_keys_cannot_escape_the_root(store):
    with pytest.raises(ValueError, match="escapes the store root"):
        store.write_bytes("../outside", b"x")


def test_default_home_prefers_textops_home_then_dagster_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTOPS_HOME", str(tmp_path / "t"))
    assert default_home() == str(tmp_path / "t")
    monkeypatch.delenv("TEXTOPS_HOME")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "d"))
    assert default_home() == str(tmp_path / "d" / "textops")
    assert LocalArtifactStore().root == str(tmp_path / "d" / "textops")
