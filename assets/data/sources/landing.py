"""Labelled files dropped into the landing folder (a local folder or a gs:// prefix): listed
for the new-data sensor, read into `raw_texts` on top of the main source.

Listing reads metadata only (one directory listing: names, sizes, modification stamps), so the
sensor can ask a bucket prefix every tick without downloading it; the content is read, and
hashed, only by the asset that ingests it."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

import polars as pl
from upath import UPath

from assets.data.sources.formats import (
    RAW_SCHEMA,
    TABLE_SUFFIXES,
    SourceError,
    limit,
    read_table,
    with_label_names,
)
from assets.locations import location
from textops_core.settings import variable

# A landed file is read whole into memory, like a downloaded source, and under the same cap.
MAX_BYTES_ENV = variable("landing_max_bytes")

# What copy and upload tools, editors and sync clients write while a file is still on its way
# (or leave behind): never data, even when the name also ends in a table suffix.
HIDDEN_PREFIXES = (".", "_", "~")
TEMPORARY_SUFFIXES = (
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".download",
    ".filepart",
    ".gstmp",
    ".swp",
    "~",
)


class LandedFileTooLarge(SourceError):
    """A landed file over the cap: left where it is, not ingested."""


def landing_max_bytes() -> int:
    return limit("landing_max_bytes")


def too_large(name: str, size: str, cap: int) -> LandedFileTooLarge:
    return LandedFileTooLarge(
        f"{name}: {size} bytes, more than the cap of {cap:,} bytes on a landed file; not "
        f"ingested. Split it into smaller files, or set {MAX_BYTES_ENV} to a larger number of "
        "bytes to allow it"
    )


def is_landed_table(name: str) -> bool:
    """A name the landing folder treats as data: a table suffix, not hidden, not temporary.
    `.`/`_`/`~` prefixes cover rsync's and gsutil's in-flight copies, Spark's `_SUCCESS`
    markers and office lock files; the sensor and `raw_texts` use the same rule, so nothing
    is ingested that the sensor would not trigger on."""
    lower = name.lower()
    if lower.startswith(HIDDEN_PREFIXES) or lower.endswith(TEMPORARY_SUFFIXES):
        return False
    return PurePosixPath(lower).suffix in TABLE_SUFFIXES


def version_stamp(info: dict) -> str:
    """What changes when a file is rewritten or replaced, short of reading it: the object
    generation on GCS (new on every upload, even of the same bytes); elsewhere the modification
    time, with the inode where there is one, since `mv` of another file over a landed one can
    bring an older mtime with it."""
    if info.get("generation") is not None:
        return f"generation:{info['generation']}"
    modified = info.get("mtime", info.get("updated", info.get("LastModified")))
    if isinstance(modified, datetime):
        modified = modified.timestamp()
    inode = info.get("ino")
    return f"mtime:{modified!r}" + (f",ino:{inode}" if inode is not None else "")


@dataclass
class LandedFile:
    """One landed file as listed: its name, size and version stamp come from the listing; its
    content is read only by `read`, and `checksum` is the sha256 of what was read, so the
    lineage names exactly the bytes ingested even if the file changed after it was listed."""

    name: str
    size: int
    version: str
    path: UPath = field(repr=False, compare=False)
    _checksum: str | None = field(default=None, init=False, repr=False, compare=False)

    def read(self, max_bytes: int | None = None) -> bytes:
        """The content, refused (LandedFileTooLarge) once it passes `max_bytes` (default:
        $TEXTOPS_LANDING_MAX_BYTES): as listed, or as read, since a file may grow after it was
        listed."""
        max_bytes = max_bytes or landing_max_bytes()
        if self.size > max_bytes:
            raise too_large(self.name, f"{self.size:,}", max_bytes)
        with self.path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise too_large(self.name, f"more than {max_bytes:,}", max_bytes)
        self._checksum = hashlib.sha256(data).hexdigest()
        return data

    @property
    def checksum(self) -> str:
        """sha256 of the content as last read (reading it now if it has not been)."""
        if self._checksum is None:
            return hashlib.sha256(self.read()).hexdigest()
        return self._checksum


def landed_files(uri: str) -> list[LandedFile]:
    """Table files directly in the landing folder, by name, from one listing that reads no
    content; a missing folder has none."""
    folder = location(uri)
    if not folder.is_dir():
        return []
    files = []
    for info in folder.fs.ls(folder.path, detail=True):
        name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") != "file" or not is_landed_table(name):
            continue
        files.append(LandedFile(name, int(info["size"]), version_stamp(info), folder / name))
    return sorted(files, key=lambda file: file.name)


def read_landed(
    landed: LandedFile, label_names: list[str], max_bytes: int | None = None
) -> pl.DataFrame:
    """A landed table mapped onto the main source's labels (by name, or by id when the file
    carries ids); rows go to train unless the file has a split column. Landed rows never enter
    test: the test split is the source's, the benchmark every model is judged on, and whoever
    can write the landing folder must not be able to shape it. A file over `max_bytes`
    (default: $TEXTOPS_LANDING_MAX_BYTES) raises LandedFileTooLarge before it is read whole."""
    source = read_table(landed.read(max_bytes), landed.name)
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


REJECTED = "rejected"  # beside the landed files: files a run refused, with the reason


def reject(landed: LandedFile, reason: str) -> str:
    """Moves a landed file that cannot be ingested to `rejected/` in the landing folder, with
    `<name>.reason.txt` beside it, so that it stops no later run; returns where it went. Fix it
    and put it back in the landing folder to ingest it."""
    folder = landed.path.parent / REJECTED
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / landed.name
    if target.exists():
        target = folder / f"{int(time.time())}-{landed.name}"
    landed.path.fs.mv(landed.path.path, target.path)
    (folder / f"{target.name}.reason.txt").write_text(reason + "\n")
    return str(target)
