"""`raw_texts`: every row of the labelled source, with its content hash as the data version."""

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from assets.data.sources.formats import SourceError
from assets.data.sources.landing import (
    LandedFileTooLarge,
    landed_files,
    landing_max_bytes,
    read_landed,
    reject,
)
from assets.data.sources.redaction import redact
from assets.data.sources.transports import DEFAULT_SOURCE, read_source
from assets.interfaces.manifests import MANIFEST_IO, RawTextsManifest, as_output
from assets.interfaces.store import ArtifactStore, cache_dir, default_home
from assets.metadata import class_shares, numeric_metadata
from assets.retries import NETWORK_RETRY, failing_at_once_on_bad_input
from assets.settings import setting
from assets.versioning import combined_hash, frame_hash, source_version
from textops_core.settings import variable


class RawTextsConfig(dg.Config):
    source: str = Field(
        "",
        description="Source URI: a TweetEval folder, a CSV / Parquet / JSONL file with text and "
        "label columns, or an https URL of either (#sha256=<hex> pins its content). Empty: "
        "$TEXTOPS_SOURCE, else the TweetEval hate task. A URL with a credential (a signed URL, "
        "user:password@) belongs in $TEXTOPS_SOURCE: run config is stored with the run as "
        "typed, while logs and metadata show the URL redacted.",
    )
    max_rows_per_split: int = Field(
        0,
        ge=0,
        description="Keep at most this many rows per source split, sampled stratified "
        "by label (0 = all rows); for quick runs.",
    )
    sample_seed: int = Field(0, description="Seed of the stratified sample")
    landing: str = Field(
        "",
        description="Folder of landed labelled files (CSV / Parquet / JSONL) added to the "
        "source, to train unless a file has a split column. Empty: $TEXTOPS_LANDING, else "
        "<TEXTOPS_HOME>/landing",
    )


def resolve_source(configured: str) -> str:
    """The source URI: `configured` (run config), else $TEXTOPS_SOURCE, else the default. One
    with surrounding whitespace is refused, not trimmed: it is most often a value pasted with
    its neighbour's quote or newline, worth a look before anything is read from it."""
    # read unstripped: whitespace around the variable's value is refused below, not trimmed
    name = "source" if configured else variable("source")
    uri = configured or os.environ.get(variable("source"), "")
    if not uri:
        return DEFAULT_SOURCE
    if uri != uri.strip():
        raise SourceError(
            f"{name}={redact(uri)!r}: starts or ends with whitespace (a space, tab or "
            "newline); remove it"
        )
    return uri


def landing_location(configured: str = "") -> str:
    """The landing folder: a local path or a gs:// prefix."""
    return configured or setting("landing") or str(Path(default_home()) / "landing")


def stratified_sample(frame: pl.DataFrame, rows_per_split: int, seed: int) -> pl.DataFrame:
    """At most `rows_per_split` rows of each source split, class shares kept, row order kept."""
    if rows_per_split <= 0:
        return frame
    indexed = frame.with_row_index("_row")
    kept = []
    for _split, part in indexed.group_by("source_split", maintain_order=True):
        if part.height <= rows_per_split:
            kept.append(part)
            continue
        for (_label,), group in part.group_by("label", maintain_order=True):
            quota = max(1, round(rows_per_split * group.height / part.height))
            kept.append(group.sample(n=min(quota, group.height), seed=seed))
    return pl.concat(kept).sort("_row").drop("_row")


def content_version(frame: pl.DataFrame, label_names: list[str]) -> str:
    """The data version of raw_texts: a hash of its rows and its label set (ids mean nothing
    without their names); the same wherever the same data was read from."""
    return combined_hash({"rows": frame_hash(frame), "label_names": "\t".join(label_names)})


def class_counts(frame: pl.DataFrame, by: str | None = None) -> dict[str, int]:
    keys = [by, "label_name"] if by else ["label_name"]
    counts = frame.group_by(keys).len().sort(keys)
    return {"/".join(str(v) for v in row[:-1]): row[-1] for row in counts.iter_rows()}


@dataclass(frozen=True)
class Landing:
    frame: pl.DataFrame  # the source's rows and the landed ones
    files: list[dict]  # file, rows, checksum of each landed file read
    refused: list[dict]  # file, bytes of each landed file over the cap, left unread


def add_landed(
    frame: pl.DataFrame, label_names: list[str], landing: str, context: dg.AssetExecutionContext
) -> Landing:
    """`frame` with the rows of every landed file in `landing`; a file over the landing cap is
    left out with a warning (the next run reads it once the cap allows it), so it never stops
    the files landed beside it. A file that cannot be read fails the run and is moved to
    `rejected/` with its reason, so that it fails no later run (drift or schedule retrains)."""
    cap = landing_max_bytes()
    files, refused = [], []
    for file in landed_files(landing):
        try:
            rows = read_landed(file, label_names, cap)
        except LandedFileTooLarge as error:
            context.log.warning(str(error))
            refused.append({"file": file.name, "bytes": file.size})
            continue
        except SourceError as error:  # this run stops; the file no longer stops the next
            moved = reject(file, str(error))
            raise SourceError(
                f"{error}; the file was moved to {moved} with the reason beside it: fix it and "
                "land it again"
            ) from None
        files.append({"file": file.name, "rows": rows.height, "checksum": file.checksum})
        frame = pl.concat([frame, rows])
    if files:
        context.log.info(f"added {len(files)} landed file(s): {files}")
    return Landing(frame, files, refused)


@dg.asset(
    group_name="data",
    kinds={"polars", "parquet"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="Every row of the labelled source: text, label id, label name, source split.",
    retry_policy=NETWORK_RETRY,
)
@failing_at_once_on_bad_input
def raw_texts(
    context: dg.AssetExecutionContext, config: RawTextsConfig, store: ArtifactStore
) -> dg.Output[RawTextsManifest]:
    uri = resolve_source(config.source)
    context.log.info(f"reading {redact(uri)}")
    source = read_source(uri, cache_dir(), context.log.info, context.log.warning)
    sampled = stratified_sample(source.frame, config.max_rows_per_split, config.sample_seed)
    landing = add_landed(sampled, source.label_names, landing_location(config.landing), context)
    frame, landed = landing.frame, landing.files
    content_hash = content_version(frame, source.label_names)
    path = f"raw_texts/{content_hash}/raw_texts.parquet"
    store.write_parquet(path, frame)  # same version, same bytes: a rewrite is a no-op
    manifest = RawTextsManifest(
        version=content_hash, path=path, label_names=source.label_names, rows=frame.height
    )
    per_split = {str(k): v for k, v in frame.group_by("source_split").len().iter_rows()}
    return as_output(
        manifest,
        {
            **numeric_metadata(
                {"dagster/row_count": frame.height, "rows": frame.height}
                | class_shares(class_counts(frame))
                | {"landed_files_count": len(landed)}
            ),
            "rows_per_split": dg.MetadataValue.json(per_split),
            "rows_per_class": dg.MetadataValue.json(class_counts(frame)),
            "rows_per_split_and_class": dg.MetadataValue.json(class_counts(frame, "source_split")),
            "label_names": dg.MetadataValue.json(source.label_names),
            "content_hash": content_hash,
            # redacted: the metadata is for people; nothing reads the source back from it
            "source_uri": dg.MetadataValue.text(redact(uri)),
            "landed_files": dg.MetadataValue.json(landed),
            "refused_landed_files": dg.MetadataValue.json(landing.refused),
            "path": dg.MetadataValue.path(store.uri(path)),
        },
    )
