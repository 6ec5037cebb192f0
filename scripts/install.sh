#!/usr/bin/env bash
# A virtualenv at .venv with exactly the versions of requirements/textops.lock (every package
# pinned with its hashes; nothing is resolved), and textops itself, editable.
#
#   bash scripts/install.sh           torch's CPU build (requirements/textops.lock)
#   bash scripts/install.sh --cuda    torch's CUDA build from PyPI (requirements/textops-gpu.lock)
#
# scripts/bootstrap.sh makes .venv with pip's installs of uv (requirements/uv.lock) and torch's
# CPU build (requirements/bootstrap.lock), from wherever pip finds torch, else from the PyTorch
# CPU index. uv installs the rest, in parallel (a third of the time pip takes for it).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 scripts/lock_inputs.py --check
lock=requirements/textops.lock
bootstrap=(-r requirements/uv.lock -r requirements/bootstrap.lock)
if [ "${1:-}" = "--cuda" ]; then
  lock=requirements/textops-gpu.lock
  bootstrap=(-r requirements/uv.lock)
elif [ -n "${1:-}" ]; then
  echo "usage: bash scripts/install.sh [--cuda]" >&2
  exit 2
fi
bash scripts/bootstrap.sh .venv "${bootstrap[@]}"
uv_install=(.venv/bin/uv pip install --quiet --python .venv/bin/python)
"${uv_install[@]}" --require-hashes --no-deps -r "$lock"
# built with the locked setuptools, not a freshly resolved one
"${uv_install[@]}" --no-deps --no-build-isolation -e .
