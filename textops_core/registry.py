"""The BentoML model store as textops uses it: how a model is published, and which model the
service serves (the newest approved one).

A model is published, never half-written: it is staged outside the store, its files are checked
against the checksums taken before the copy, and only then is it moved into the store in one
rename, labelled `approved: pending`. It becomes the newest approved model when its label is
flipped to `true` (one atomic rewrite of its model.yaml, as a withdrawal flips it back). Readers
take no lock and skip, with a warning, any entry they cannot read or whose files do not match
its checksums. The lock serializes writers only (the gate's publish, a rollback) and gives up
after a timeout with a message saying so.

Shared by the pipeline and the service; depends on bentoml, filelock, pyyaml and
`textops_core.settings` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml

from textops_core.settings import env_wait_seconds

MODEL_NAME = "textops-classifier"
PINNED_TAG_ENV = "TEXTOPS_MODEL_TAG"
LOCK_TIMEOUT_ENV = "TEXTOPS_REGISTRY_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 120.0
CHECKSUMS_FILE = "checksums.json"  # relative path -> size and sha256, taken before the copy
PENDING = "pending"  # the `approved` label of a published model that is not served yet
STALE_STAGING_S = 3600.0

logger = logging.getLogger("textops.registry")


class NoApprovedModelError(LookupError):
    """The BentoML model store holds no approved textops model."""


class RegistryBusyError(TimeoutError):
    """Another process held the model store's lock longer than the timeout."""


class CorruptModelError(ValueError):
    """A model's files do not match the checksums taken when it was written."""


def bentoml_home() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


def models_dir() -> Path:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store.get()._path)


def lock_timeout_s() -> float:
    """$TEXTOPS_REGISTRY_LOCK_TIMEOUT_S: seconds a writer waits for the lock (0: try once). A
    negative or infinite value would wait forever and is refused, naming the variable."""
    return env_wait_seconds(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_S)


@contextmanager
def store_lock(
    name: str = MODEL_NAME, timeout_s: float | None = None, folder: Path | None = None
) -> Iterator[float]:
    """Holds the inter-process lock of writers to the model `name` (reentrant in one thread);
    yields the seconds it waited. Raises RegistryBusyError after `timeout_s` (default
    $TEXTOPS_REGISTRY_LOCK_TIMEOUT_S, 120 s). The lock is an OS file lock: a holder that dies
    releases it."""
    from filelock import FileLock, Timeout

    folder = folder or models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.lock"
    limit = lock_timeout_s() if timeout_s is None else timeout_s
    lock = FileLock(path, is_singleton=True)
    started = time.monotonic()
    try:
        lock.acquire(timeout=limit)
    except Timeout:
        raise RegistryBusyError(
            f"the model store's lock {path} was held by another process for over {limit:g} s "
            f"(another approval or rollback is publishing); nothing was changed: run again "
            f"when it is done, or raise {LOCK_TIMEOUT_ENV}"
        ) from None
    try:
        yield time.monotonic() - started
    finally:
        lock.release()


# --- checksums -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder`, written to its checksums.json (flushed to
    disk before it is visible under its name)."""
    sums = {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CHECKSUMS_FILE
    }
    _write_durably(folder / CHECKSUMS_FILE, json.dumps(sums, indent=2, sort_keys=True))
    return sums


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _valid_entry(name: object, entry: object) -> bool:
    """One checksums.json entry: a relative path inside the folder, its size and its sha256."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return False
    if any(part in ("", ".", "..") for part in name.split("/")):
        return False
    return (
        isinstance(entry, dict)
        and type(entry.get("size")) is int
        and entry["size"] >= 0
        and isinstance(entry.get("sha256"), str)
        and _SHA256.fullmatch(entry["sha256"]) is not None
    )


def read_checksums(folder: Path) -> dict[str, dict[str, Any]] | None:
    """A model folder's checksums.json as {relative path: {size, sha256}}; None when it has
    none. A file that is not that shape (damaged, hand-edited, naming a path outside the
    folder) raises CorruptModelError."""
    sums_path = Path(folder) / CHECKSUMS_FILE
    if not sums_path.is_file():
        return None
    try:
        sums = json.loads(sums_path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        raise CorruptModelError(f"{CHECKSUMS_FILE} cannot be read: {error}") from None
    if not isinstance(sums, dict) or not sums:
        raise CorruptModelError(f"{CHECKSUMS_FILE} is not a map of file names to their checksums")
    bad = next((name for name, entry in sums.items() if not _valid_entry(name, entry)), None)
    if bad is not None:
        raise CorruptModelError(
            f"{CHECKSUMS_FILE} is damaged: its entry {str(bad)[:80]!r} is not a relative path "
            "with a size and a sha256"
        )
    return sums


def integrity_problems(folder: Path, full: bool = False) -> list[str]:
    """What is wrong with a model folder's files against its checksums.json: missing files,
    other sizes, and with `full` other contents. A missing or damaged checksums.json is a
    problem too (the files cannot be verified), never an exception."""
    try:
        sums = read_checksums(folder)
    except CorruptModelError as error:
        return [str(error)]
    if sums is None:
        return [f"{CHECKSUMS_FILE} is missing: its files cannot be verified"]
    problems = []
    for name, expected in sums.items():
        path = folder / name
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError:
            size = None
        if size is None:
            problems.append(f"{name} is missing")
        elif size != expected["size"]:
            problems.append(f"{name} has {size} bytes, not {expected['size']}")
        elif full and _sha256(path) != expected["sha256"]:
            problems.append(f"{name} does not match its sha256")
    return problems


def _write_durably(path: Path, text: str) -> None:
    """`text` written to `path` in one atomic replace, on disk before it is visible (a power
    cut leaves the old file or the new one, never an empty one)."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with staged.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Every file and folder under `folder` flushed to disk: what a rename publishes next."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            with path.open("rb+") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


# --- reading -------------------------------------------------------------------------------


_skipped: dict[str, dict[str, str]] = {}


def skipped_entries(name: str = MODEL_NAME) -> dict[str, str]:
    """The entries the last read of model `name` skipped, {tag: why}: what the gate records and
    the service counts on /metrics, so a damaged entry is seen without reading logs."""
    return dict(_skipped.get(name, {}))


_warned: set[tuple[str, str]] = set()


def _skip(skipped: dict[str, str], tag: str, why: str) -> None:
    """Records a skipped entry; warns once per process for each entry and reason (a service
    reads the store every few seconds)."""
    skipped[tag] = why
    if (tag, why) not in _warned:
        _warned.add((tag, why))
        logger.warning("skipping %s in the model store: %s", tag, why)


def stored_models(
    name: str = MODEL_NAME, skipped: dict[str, str] | None = None
) -> list[bentoml.Model]:
    """Every readable version of model `name`. An entry that cannot be read (no model.yaml,
    a broken one: what a copy killed half-way leaves) is skipped with a warning and recorded
    in `skipped`, so one bad folder never hides the others."""
    folder = models_dir() / name
    skipped = {} if skipped is None else skipped
    if not folder.is_dir():
        return []
    models = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir():
            continue
        try:
            models.append(bentoml.models.get(f"{name}:{entry.name}"))
        except Exception as error:  # any unreadable entry is skipped, whatever broke it
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            _skip(
                skipped,
                f"{name}:{entry.name}",
                f"it cannot be read ({first[:200]}); delete it with `bentoml models delete "
                f"{name}:{entry.name}` once no process is writing it",
            )
    return models


def approved_models(name: str = MODEL_NAME) -> list[bentoml.Model]:
    """Approved models whose files are all there and verifiable, newest first (by creation
    time, never by the `latest` alias). Takes no lock: a model becomes approved in one atomic
    rewrite. What it skips is in `skipped_entries(name)`."""
    skipped: dict[str, str] = {}
    approved = []
    for model in stored_models(name, skipped):
        if model.info.labels.get("approved") != "true":
            continue
        problems = integrity_problems(Path(model.path))
        if problems:
            _skip(skipped, str(model.tag), "approved, but " + "; ".join(problems[:3]))
            continue
        approved.append(model)
    _skipped[name] = skipped
    return sorted(approved, key=lambda m: m.info.creation_time, reverse=True)


def latest_approved(name: str = MODEL_NAME) -> bentoml.Model | None:
    models = approved_models(name)
    return models[0] if models else None


# --- writing -------------------------------------------------------------------------------


def _staging_dir() -> Path:
    # beside the store (same file system, so the move into it is one rename) but outside it,
    # where BentoML's own listing never looks
    return bentoml_home() / ".textops-staging"


def _clear_stale_staging(staging: Path) -> None:
    for entry in staging.iterdir() if staging.is_dir() else []:
        try:
            if time.time() - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue


def publish_pending(
    model_dir: Path,
    labels: dict[str, str],
    metadata: dict[str, Any],
    name: str = MODEL_NAME,
) -> str:
    """Write `model_dir` into the store as a new version labelled `approved: pending`: copied
    to a staging folder, checked file by file against checksums taken before the copy, then
    moved into the store in one rename. Returns its tag. A crash at any point leaves either
    nothing in the store or a complete model that is not approved."""
    from bentoml._internal.models.model import ModelStore

    model_dir = Path(model_dir)
    expected = write_checksums(model_dir)
    staging = _staging_dir()
    staging.mkdir(parents=True, exist_ok=True)
    _clear_stale_staging(staging)
    run_dir = Path(os.path.join(staging, f"{os.getpid()}-{time.time_ns()}"))
    run_dir.mkdir()
    try:
        with bentoml.models.create(
            name,
            labels={**labels, "approved": PENDING},
            metadata=metadata,
            _model_store=ModelStore(run_dir),
        ) as model:
            shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
        tag = model.tag
        staged = run_dir / tag.name / tag.version
        problems = integrity_problems(staged, full=True)
        missing = sorted(set(expected) - {str(p.relative_to(staged)) for p in staged.rglob("*")})
        if problems or missing:
            raise CorruptModelError(
                f"{tag} was not published: its staged copy differs from {model_dir} "
                f"({'; '.join(problems + [f'{m} is missing' for m in missing])})"
            )
        target = models_dir() / tag.name / tag.version
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(staged)
        os.rename(staged, target)
        _fsync_dir(target.parent)
        _point_latest(target.parent, tag.version)
        return str(tag)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _point_latest(folder: Path, version: str) -> None:
    """BentoML's `latest` alias of the name (used by `bentoml models get <name>`, never by
    textops): rewritten atomically."""
    _write_durably(folder / "latest", version)


def relabel(
    tag: str, updates: dict[str, str], name: str = MODEL_NAME, folder: Path | None = None
) -> dict[str, str]:
    """Change a model's labels in one atomic rewrite of its model.yaml (a reader sees the old
    labels or the new ones, never a mix); returns the new labels. `folder`: the models folder
    holding it (default this process's BentoML store)."""
    import yaml

    with store_lock(name, folder=folder):
        version = tag.split(":", 1)[1] if ":" in tag else tag
        info_file = (folder or models_dir()) / name / version / "model.yaml"
        if not info_file.is_file():
            bentoml.models.get(tag)  # BentoML's own error for a tag it does not hold
        info = yaml.safe_load(info_file.read_text())
        info["labels"] = {**info.get("labels", {}), **updates}
        _write_durably(info_file, yaml.safe_dump(info, sort_keys=False))
        return info["labels"]


def approve(tag: str, name: str = MODEL_NAME) -> dict[str, str]:
    """Make a published model the newest approved one, after checking that its files are all
    there at their sizes (their contents were checked when it was published; this runs under
    the lock, so it stays cheap)."""
    model = bentoml.models.get(tag)
    problems = integrity_problems(Path(model.path))
    if problems:
        raise CorruptModelError(f"{tag} is not approved: {'; '.join(problems)}")
    return relabel(tag, {"approved": "true"}, name)


def withdraw(
    tag: str, reason: str, by: str, name: str = MODEL_NAME, folder: Path | None = None
) -> dict[str, str]:
    """Take an approved model out of service: its labels say it is withdrawn, why, by whom and
    when, and it is no longer approved, so the previous approved model is the newest again.
    Returns the new labels. The model itself stays in the store."""
    return relabel(
        tag,
        {
            "approved": "false",
            "withdrawn": "true",
            "withdrawn_reason": reason,
            "withdrawn_by": by,
            "withdrawn_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        name,
        folder,
    )


def discard(tag: str) -> None:
    """Delete a published model that was never approved (its gate decided otherwise)."""
    bentoml.models.delete(tag)


# --- serving -------------------------------------------------------------------------------


def serving_tag(name: str = MODEL_NAME) -> str:
    """$TEXTOPS_MODEL_TAG when set, else the newest approved model's tag."""
    if pinned := os.environ.get(PINNED_TAG_ENV):
        return pinned
    model = latest_approved(name)
    if model is None:
        raise NoApprovedModelError(
            f"no approved '{name}' model in the BentoML store ({bentoml_home()}): run the "
            f"pipeline until approved_model approves one (README, Quickstart), or set "
            f"{PINNED_TAG_ENV} to a model tag"
        )
    return str(model.tag)


def pin_serving_tag(name: str = MODEL_NAME) -> str:
    """The tag this deployment serves, resolved once: the process that starts the service's
    workers resolves it and exports it as $TEXTOPS_MODEL_TAG, so every worker it starts, and
    every worker it restarts after a later approval, serves the same model."""
    tag = serving_tag(name)
    os.environ[PINNED_TAG_ENV] = tag
    return tag


# --- following ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntry:
    """A model version as a running service reads it from a models folder: its model.yaml, no
    BentoML store object (the folder followed may be a mounted volume, not this store)."""

    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]
    created: datetime


def read_entries(
    folder: Path, name: str = MODEL_NAME, skipped: dict[str, str] | None = None
) -> list[StoredEntry]:
    """Every readable version of `name` in a BentoML models folder; unreadable ones skipped,
    with a warning, and recorded in `skipped`."""
    skipped = {} if skipped is None else skipped
    entries = []
    versions = Path(folder) / name
    for version in sorted(versions.iterdir()) if versions.is_dir() else []:
        if not version.is_dir() or version.name.startswith("."):
            continue
        try:
            entries.append(_entry(version / "model.yaml", name))
        except Exception as error:  # any damage to one entry skips that entry only
            why = (
                "it has no model.yaml"
                if isinstance(error, FileNotFoundError)
                else (f"its model.yaml cannot be read ({type(error).__name__})")
            )
            _skip(skipped, f"{name}:{version.name}", why)
    return entries


def _entry(info_file: Path, name: str) -> StoredEntry:
    import yaml

    info = yaml.safe_load(info_file.read_text())
    created = info["creation_time"]
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    if not isinstance(created, datetime):
        raise TypeError(f"creation_time is {type(created).__name__}")
    labels, metadata = info.get("labels") or {}, info.get("metadata") or {}
    if not isinstance(labels, dict) or not isinstance(metadata, dict):
        raise TypeError("labels and metadata must be maps")
    return StoredEntry(
        f"{name}:{info_file.parent.name}",
        info_file.parent,
        {str(k): str(v) for k, v in labels.items()},
        metadata,
        created if created.tzinfo else created.replace(tzinfo=UTC),
    )


def approved_entries(folder: Path, name: str = MODEL_NAME) -> list[StoredEntry]:
    """Approved versions whose files are all there at their sizes, newest first; what it skips
    is in `skipped_entries(name)`."""
    skipped: dict[str, str] = {}
    approved = []
    for entry in read_entries(folder, name, skipped):
        if entry.labels.get("approved") != "true":
            continue
        problems = integrity_problems(entry.path)
        if problems:
            _skip(skipped, entry.tag, "approved, but " + "; ".join(problems[:3]))
            continue
        approved.append(entry)
    _skipped[name] = skipped
    return sorted(approved, key=lambda e: e.created, reverse=True)
