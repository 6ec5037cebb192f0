"""Versions: content hashes of data (the data versions lineage is built on) and of code (the
code versions that mark assets stale when the code that computes them changes)."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
from pathlib import Path

import polars as pl

# Packages whose source decides what an asset computes; library code is pinned by the install.
FIRST_PARTY = ("assets", "data_checks", "bento", "textops_core")


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


def run_version(base: str, run_id: str) -> str:
    """The version of what one run made from `base` (an input's version, a time): two runs
    from the same input never overwrite each other's artifacts."""
    return f"{base}-{run_id[:8]}"


def source_version(*modules: str) -> str:
    """A code version for an asset: the hash of the source of `modules` and of every
    first-party module they import, directly or not. It changes when any of that code changes
    and is the same wherever the same source is installed (a checkout, a wheel, an image)."""
    closure: dict[str, bytes] = {}
    pending = list(modules)
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        found = _module_source(name)
        if found is None:
            continue
        closure[name], imports = found
        pending += imports
    digest = hashlib.sha256()
    for name in sorted(closure):
        digest.update(f"{name}\n".encode() + closure[name] + b"\n")
    return digest.hexdigest()[:12]


@functools.cache
def _module_source(module: str) -> tuple[bytes, list[str]] | None:
    """Source and first-party imports of a module, or None for a name that is not a module (an
    attribute imported with `from package import name`). Found on disk, never imported: asking
    importlib about `package.module.name` would import `package.module` (torch, lightning)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not file.is_file():
        return None
    source = file.read_bytes()
    return source, _first_party_imports(source)


def _first_party_imports(source: bytes) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name.split(".")[0] in FIRST_PARTY]
