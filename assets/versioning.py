"""Content hashes: the data versions that lineage is built on."""

from __future__ import annotations

import hashlib
import json

import polars as pl


def frame_hash(frame: pl.DataFrame) -> str:
    """sha256 of a frame's columns and rows in order, independent of the storage format."""
    digest = hashlib.sha256(json.dumps(frame.columns).encode())
    for row in frame.iter_rows():
        digest.update(json.dumps(row, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def combined_hash(parts: dict[str, str]) -> str:
    """One hash for several named hashes (e.g. the three split hashes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
