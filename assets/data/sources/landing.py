"""Labelled files dropped into the landing folder (a local folder or a gs:// prefix): listed
for the new-data sensor, read into `raw_texts` on top of the main source."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from assets.data.sources.formats import (
    RAW_SCHEMA,
    TABLE_SUFFIXES,
    SourceError,
    read_table,
    with_label_names,
)
from assets.locations import location


@dataclass(frozen=True)
class LandedFile:
    name: str
    size: int
    checksum: str  # sha256 of the content
    read: Callable[[], bytes]


def landed_files(uri: str) -> list[LandedFile]:
    """Table files directly in the landing folder, by name; a missing folder has none."""
    folder = location(uri)
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not (path.suffix.lower() in TABLE_SUFFIXES and path.is_file()):
            continue
        data = path.read_bytes()
        files.append(
            LandedFile(path.name, len(data), hashlib.sha256(data).hexdigest(), lambda d=data: d)
        )
    return files


def read_landed(landed: LandedFile, label_names: list[str]) -> pl.DataFrame:
    """A landed table mapped onto the main source's labels (by name, or by id when the file
    carries ids); rows go to train unless the file has a split column. Landed rows never enter
    test: the test split is the source's, the benchmark every model is judged on, and whoever
    can write the landing folder must not be able to shape it."""
    source = read_table(landed.read(), landed.name)
    frame = source.frame
    in_test = frame.filter(pl.col("source_split") == "test").height
    if in_test:
        raise SourceError(
            f"{landed.name}: {in_test} row(s) have split 'test'; landed rows may go to train "
            "or validation only (the test split is the source's, so every model is judged on "
            "the same benchmark): drop those rows or their split"
        )
    names = set(frame["label_name"].unique().to_list())
    if names <= set(label_names):
        index = {name: i for i, name in enumerate(label_names)}
        frame = frame.with_columns(
            label=pl.col("label_name").replace_strict(index, return_dtype=pl.Int64)
        )
    elif source.label_names == [str(i) for i in range(len(source.label_names))]:
        unknown = sorted(set(frame["label"].to_list()) - set(range(len(label_names))))
        if unknown:
            raise SourceError(
                f"{landed.name}: label ids {unknown} are not in the label set "
                f"(0..{len(label_names) - 1}: {', '.join(label_names)})"
            )
        frame = with_label_names(frame.drop("label_name"), label_names)
    else:
        raise SourceError(
            f"{landed.name}: labels {sorted(names - set(label_names))} are not in "
            f"the label set ({', '.join(label_names)})"
        )
    return frame.with_columns(pl.col("source_split").fill_null("train")).select(
        [pl.col(c).cast(t) for c, t in RAW_SCHEMA.items()]
    )
