"""Shared fixtures: offline settings, small real-format data, a store in tmp_path."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval"

POSITIVE = ["love", "great", "wonderful", "happy", "excellent", "kind", "sunny", "brilliant"]
NEGATIVE = ["hate", "awful", "terrible", "angry", "horrible", "cruel", "gloomy", "dreadful"]


def tiny_rows(n: int, offset: int = 0) -> list[tuple[str, int]]:
    """`n` distinct short tweets, alternating labels: 0 positive words, 1 negative words."""
    rows = []
    for i in range(offset, offset + n):
        label = i % 2
        words = POSITIVE if label == 0 else NEGATIVE
        rows.append(
            (f"@user tweet {i}: such a {words[i % 8]} day, {words[(i + 3) % 8]} too", label)
        )
    return rows


def write_tweeteval(folder: Path, sizes=(40, 12, 12), mapping=("positive", "negative")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(mapping)))
    offset = 0
    for stem, size in zip(("train", "val", "test"), sizes, strict=True):
        rows = tiny_rows(size, offset)
        offset += size
        (folder / f"{stem}_text.txt").write_text("".join(f"{t}\n" for t, _ in rows))
        (folder / f"{stem}_labels.txt").write_text("".join(f"{label}\n" for _, label in rows))
    return folder


@pytest.fixture
def tweeteval_dir(tmp_path: Path) -> Path:
    return write_tweeteval(tmp_path / "tweeteval")


@pytest.fixture
def store(tmp_path: Path):
    from orchestration.resources import LocalArtifactStore

    return LocalArtifactStore(root=str(tmp_path / "store"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTOPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TEXTOPS_SOURCE", raising=False)


@pytest.fixture
def shared_tweeteval() -> Path:
    if not (SHARED_DATA / "hate" / "train_text.txt").is_file():
        pytest.skip(f"real TweetEval data not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA
