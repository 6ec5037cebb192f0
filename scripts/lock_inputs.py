"""The digest of what the locks are made from: pyproject.toml's requirements (dependencies,
extras, Python and build requirements), constraints.txt and requirements/*.in. scripts/lock.sh
writes it into requirements/textops.lock; scripts/install.sh refuses a lock made from other
inputs, naming what to run.

    python3 scripts/lock_inputs.py            # print the digest
    python3 scripts/lock_inputs.py --check    # exit 1, with a message, if the lock is stale
    python3 scripts/lock_inputs.py --stamp    # record the digest in the lock (scripts/lock.sh)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "textops.lock"
MARK = "# inputs-sha256: "


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def digest() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": pyproject.get("build-system", {}).get("requires", []),
        "constraints.txt": requirement_lines(ROOT / "constraints.txt"),
        **{
            f"requirements/{path.name}": requirement_lines(path)
            for path in sorted((ROOT / "requirements").glob("*.in"))
        },
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded() -> str | None:
    if not LOCK.is_file():
        return None
    for line in LOCK.read_text().splitlines():
        if line.startswith(MARK):
            return line.removeprefix(MARK).strip()
    return None


def stamp(current: str) -> None:
    """The digest as the last line of the lock's header comment."""
    lines = [line for line in LOCK.read_text().splitlines() if not line.startswith(MARK)]
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    LOCK.write_text("\n".join([*lines[:header], MARK + current, *lines[header:]]) + "\n")


def main() -> int:
    current = digest()
    if "--stamp" in sys.argv:
        stamp(current)
        return 0
    if "--check" not in sys.argv:
        print(current)
        return 0
    if recorded() != current:
        print(
            f"{LOCK.relative_to(ROOT)} was not made from the current pyproject.toml, "
            "constraints.txt and requirements/*.in (a dependency was added, removed or its "
            "range changed since the lock was made). Run scripts/lock.sh to refresh the locks, "
            "then the tests (docs/dependencies.md).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
