"""What W&B wrote offline, read back from its run files (`run-<id>.wandb`: a log of protobuf
records in fixed-size blocks), so tests assert on what was logged, not on mocks."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7  # the file's ":W&B" magic, version and padding; then each chunk's crc, length, kind


@dataclass
class LoggedArtifact:
    type: str
    name: str
    aliases: list[str]
    metadata: dict[str, Any]
    description: str
    entries: dict[str, str]  # path in the artifact -> reference URI


@dataclass
class LoggedRun:
    id: str
    job_type: str
    group: str
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[LoggedArtifact] = field(default_factory=list)


def _records(path: Path):
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # padding up to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:  # a whole record
            yield chunk
        elif kind == 2:  # first part
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _value(item) -> Any:
    return json.loads(item.value_json)


def read_run(path: Path) -> LoggedRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run: LoggedRun | None = None
    for raw in _records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = LoggedRun(r.run_id, r.job_type, r.run_group, r.display_name)
            run.config.update({_key(i): _value(i) for i in r.config.update})
        elif run is None:
            continue
        elif kind == "config":
            run.config.update({_key(i): _value(i) for i in record.config.update})
        elif kind == "summary":
            run.summary.update({_key(i): _value(i) for i in record.summary.update})
        elif kind == "history":
            run.history.append({_key(i): _value(i) for i in record.history.item})
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                LoggedArtifact(
                    a.type,
                    a.name,
                    list(a.aliases),
                    json.loads(a.metadata) if a.metadata else {},
                    a.description,
                    {entry.path: entry.ref for entry in a.manifest.contents},
                )
            )
    if run is None:
        raise ValueError(f"{path} holds no run")
    return run


def offline_runs(folder: Path) -> list[LoggedRun]:
    """Every offline run W&B wrote under `folder` (the tracker's files folder)."""
    return [read_run(path) for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))]
