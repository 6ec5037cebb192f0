"""`text_splits`: deduplicated, leak-free train / validation / test splits of `raw_texts`."""

import functools
import sys
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.data.raw import class_counts
from assets.interfaces.manifests import (
    MANIFEST_IO,
    SPLITS,
    RawTextsManifest,
    TextSplitsManifest,
    as_output,
)
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import ExperimentTracker, location_metadata
from assets.metadata import class_shares, numeric_metadata
from assets.tracking import splits_files, tracking_context
from assets.versioning import combined_hash, frame_hash, source_version

# A text found in two splits stays in the later one: test is never touched, so it stays the
# benchmark's, and validation wins over train.
PRECEDENCE = {"test": 0, "validation": 1, "train": 2}
SPLIT_COLUMNS = ["text", "label", "label_name"]
# Characters nobody sees: format characters (zero-width space, non-joiner and joiner, word
# joiner, byte-order mark, soft hyphen, bidi controls) and the other default-ignorable ones
# (variation selectors, combining grapheme joiner, Hangul fillers).
INVISIBLE = r"[\p{Cf}\p{Default_Ignorable_Code_Point}]"
# Texts whose match keys are made at once: the keys of a large source are another copy of it.
KEY_CHUNK_ROWS = 1 << 20


class TextSplitsConfig(dg.Config):
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of rows for validation when the source has no splits"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of rows for test when the source has no splits"
    )
    seed: int = Field(42, description="Seed of the stratified split of rows without a split")


@dataclass
class SplitResult:
    splits: dict[str, pl.DataFrame]
    drops: dict[str, int]  # reason -> rows dropped


def normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Unicode NFC and trimmed whitespace; inner whitespace is part of the text."""
    return frame.with_columns(pl.col("text").str.normalize("NFC").str.strip_chars())


def match_keys(texts: pl.Series) -> pl.Series:
    """What each text is matched by across splits, so that a copy of a test text cannot reach
    train or validation by looking different only to a machine: without invisible characters,
    NFKC-normalised, case-folded, its whitespace runs one space, trimmed. The keys only find
    copies; the texts themselves are kept as written.

    An ASCII text (most tweets) is only lowercased: NFKC and case folding change nothing more
    in it, and they are the costly part."""
    keys = texts.str.to_lowercase()
    wide = (texts.str.len_bytes() != texts.str.len_chars()).arg_true()
    if len(wide):
        keys = keys.scatter(wide, _unicode_keys(texts.gather(wide)))
    # runs of whitespace, and single whitespace other than a space: all else is left untouched
    return keys.str.replace_all(r"\s{2,}|[\s--[ ]]", " ").str.strip_chars()


def hashed_match_keys(texts: pl.Series) -> pl.Series:
    """`match_keys`, each hashed with two seeds into a struct of two 64-bit numbers (null for a
    null text): matched as the keys are, since a chance collision of 128 bits is negligible, in
    16 bytes a text where the keys would hold another copy of every text."""
    hashes = []
    for start in range(0, len(texts) or 1, KEY_CHUNK_ROWS):  # the keys of a chunk at a time
        keys = match_keys(texts.slice(start, KEY_CHUNK_ROWS))
        hashes.append(pl.DataFrame({"a": keys.hash(1), "b": keys.hash(2)}))
    hashed = pl.concat(hashes).to_struct(texts.name)
    return pl.select(pl.when(texts.is_not_null()).then(hashed)).to_series()


def _unicode_keys(texts: pl.Series) -> pl.Series:
    visible = texts.str.replace_all(INVISIBLE, "").str.normalize("NFKC")
    lowered, folded = _case_folds()
    return visible.str.to_lowercase().str.replace_many(lowered, folded).str.normalize("NFKC")


@functools.cache
def _case_folds() -> tuple[list[str], list[str]]:
    """The characters whose case folding is not their lowercase (ß → ss, ς → σ, ſ → s, …):
    polars lowercases, these finish Python's `str.casefold`."""
    folds = {}
    for code in range(sys.maxunicode + 1):
        character = chr(code)
        if character.lower() == character != character.casefold():
            folds[character] = character.casefold()
    return list(folds), list(folds.values())


def assign_splits(frame: pl.DataFrame, validation: float, test: float, seed: int) -> pl.DataFrame:
    """Keep source splits; give rows without one a seeded split, stratified by label."""
    if validation + test >= 1:
        raise ValueError(
            f"validation_fraction + test_fraction must be below 1, got {validation + test:.2f}"
        )
    has_split = frame.filter(pl.col("source_split").is_not_null())
    unsplit = frame.filter(pl.col("source_split").is_null())
    if unsplit.height == 0:
        return frame.rename({"source_split": "split"})
    parts = []
    for (_label,), group in unsplit.group_by("label", maintain_order=True):
        shuffled = group.sample(fraction=1.0, shuffle=True, seed=seed)
        n_test = round(group.height * test)
        n_validation = round(group.height * validation)
        # The first n_test shuffled rows go to test, the next n_validation to validation.
        position = pl.int_range(pl.len())
        split = (
            pl.when(position < n_test)
            .then(pl.lit("test"))
            .when(position < n_test + n_validation)
            .then(pl.lit("validation"))
            .otherwise(pl.lit("train"))
        )
        parts.append(shuffled.with_columns(source_split=split))
    return pl.concat([has_split, *parts]).rename({"source_split": "split"})


def build_splits(raw: pl.DataFrame, config: TextSplitsConfig) -> SplitResult:
    """Normalise, drop empty and duplicate texts, and remove cross-split leaks, counting each:
    a text in two splits, or its copy by `match_keys`, stays only in the first of test,
    validation, train."""
    frame = normalise(raw.with_columns(pl.col("source_split").cast(pl.String)))
    frame = frame.with_row_index("_row")
    empty = frame["text"].is_null() | (frame["text"] == "")
    drops = {f"empty_{split}": n for split, n in _rows_per_split(frame.filter(empty)).items()}
    frame = frame.filter(~empty)
    frame = frame.with_columns(_key=hashed_match_keys(frame["text"]))
    frame, duplicates = _without_duplicates(frame)
    frame = assign_splits(frame, config.validation_fraction, config.test_fraction, config.seed)
    frame, leaks = _without_leaks(frame.sort("_row"))
    splits = {name: frame.filter(pl.col("split") == name).select(SPLIT_COLUMNS) for name in SPLITS}
    return SplitResult(splits=splits, drops=drops | duplicates | leaks)


def _without_duplicates(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """The first row of each text in each source split. Rows without a source split are
    deduplicated by their match key, before they are split, so that neither a duplicate pair
    nor a pair of copies can straddle two splits by chance; a source split keeps its own near
    copies (a case variant of a train text is still another train example)."""
    before = _rows_per_split(frame)
    same = pl.when(pl.col("source_split").is_null()).then(pl.col("_key")).otherwise("text")
    frame = frame.with_columns(_same=same)
    frame = frame.unique(subset=["source_split", "_same"], keep="first", maintain_order=True)
    after = _rows_per_split(frame)
    drops = {f"duplicates_{split}": before[split] - after[split] for split in before}
    return frame.drop("_same"), drops


def _without_leaks(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Each text (by match key) in the first of test, validation, train it is in, only."""
    frame = frame.with_columns(
        _rank=pl.col("split").replace_strict(PRECEDENCE, return_dtype=pl.Int8)
    )
    keep_rank = frame.group_by("_key").agg(_keep_rank=pl.col("_rank").min())
    frame = frame.join(keep_rank, on="_key", how="left", maintain_order="left")
    leaked = frame.filter(pl.col("_rank") != pl.col("_keep_rank"))
    split_of_rank = {rank: name for name, rank in PRECEDENCE.items()}
    drops = {
        f"{split}_also_in_{split_of_rank[kept_in]}": group.height
        for (split, kept_in), group in leaked.group_by(["split", "_keep_rank"])
    }
    return frame.filter(pl.col("_rank") == pl.col("_keep_rank")), drops


def _rows_per_split(frame: pl.DataFrame) -> dict[str, int]:
    """Row count per source split; rows without one count as 'unsplit'."""
    counts = frame.group_by("source_split").len()
    return {split or "unsplit": n for split, n in counts.iter_rows()}


def class_balance(frame: pl.DataFrame) -> dict[str, float]:
    counts = class_counts(frame)
    return {name: round(count / max(frame.height, 1), 4) for name, count in counts.items()}


@dg.asset(
    group_name="data",
    kinds={"polars", "parquet"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Train / validation / test: normalised, deduplicated, no text in two splits.",
)
def text_splits(
    context: dg.AssetExecutionContext,
    config: TextSplitsConfig,
    store: ArtifactStore,
    tracker: ExperimentTracker,
    raw_texts: RawTextsManifest,
) -> dg.Output[TextSplitsManifest]:
    raw = store.read_parquet(raw_texts.path)
    result = build_splits(raw, config)
    hashes = {name: frame_hash(frame) for name, frame in result.splits.items()}
    # The raw version is part of the version: these splits are those of that raw data.
    version = combined_hash(
        {**hashes, "label_names": str(raw_texts.label_names), "raw_texts": raw_texts.version}
    )[:16]
    paths = {name: f"text_splits/{version}/{name}.parquet" for name in SPLITS}
    for name, frame in result.splits.items():
        store.write_parquet(paths[name], frame)  # same version, same bytes: a rewrite is a no-op
    manifest = TextSplitsManifest(
        version=version,
        paths=paths,
        hashes=hashes,
        label_names=raw_texts.label_names,
        raw_texts_version=raw_texts.version,
    )
    sizes = {name: frame.height for name, frame in result.splits.items()}
    context.log.info(f"splits {sizes}; dropped {result.drops}")
    tracked = tracker.log_dataset(
        tracking_context(context, data_version=version),
        splits_files(store, manifest, sizes),
    )
    numbers: dict[str, float | int] = {"dagster/row_count": sum(sizes.values())}
    numbers |= {f"{name}_rows": size for name, size in sizes.items()}
    numbers |= {f"dropped_{reason}": count for reason, count in sorted(result.drops.items())}
    numbers["dropped_total"] = sum(result.drops.values())
    numbers |= class_shares(class_counts(result.splits["train"]), prefix="train_share")
    metadata: dict[str, Any] = numeric_metadata(numbers)
    metadata |= {f"{name}_hash": dg.MetadataValue.text(h) for name, h in hashes.items()}
    metadata["class_balance"] = dg.MetadataValue.json(
        {name: class_balance(frame) for name, frame in result.splits.items()}
    )
    metadata["raw_texts_version"] = dg.MetadataValue.text(raw_texts.version)
    metadata["path"] = dg.MetadataValue.path(store.uri(f"text_splits/{version}"))
    return as_output(manifest, metadata | location_metadata(tracked))
