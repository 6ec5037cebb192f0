#!/usr/bin/env bash
# A virtualenv at .venv with exactly the versions of requirements/textops.lock (every package
# pinned with its hashes; nothing is resolved), and textops itself, editable.
#
#   bash scripts/install.sh           torch's CPU build (requirements/textops.lock)
#   bash scripts/install.sh --cuda    torch's CUDA build from PyPI (requirements/textops-gpu.lock)
#
# pip installs uv (requirements/uv.lock) and torch's CPU build (requirements/bootstrap.lock)
# first, through pip's own configuration, so torch comes from wherever pip finds it: a folder of
# wheels in PIP_FIND_LINKS, or the PyTorch CPU index in PIP_EXTRA_INDEX_URL. uv installs the
# rest, in parallel (a third of the time pip takes for it).
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
python3 -m venv --clear .venv  # a fresh environment: exactly the lock, nothing left over
if ! .venv/bin/pip install -q --require-hashes --no-deps "${bootstrap[@]}"; then
  cat >&2 <<'MSG'
scripts/install.sh: pip could not install requirements/uv.lock and requirements/bootstrap.lock
(uv, and torch's CPU build torch==2.13.0+cpu). The CPU build is not on PyPI: let pip find it with
  export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
or put the wheel in a folder and export PIP_FIND_LINKS=/that/folder, then run this again.
MSG
  exit 1
fi
uv_install=(.venv/bin/uv pip install --quiet --python .venv/bin/python)
"${uv_install[@]}" --require-hashes --no-deps -r "$lock"
# built with the locked setuptools, not a freshly resolved one
"${uv_install[@]}" --no-deps --no-build-isolation -e .
