#!/usr/bin/env bash
# A fresh virtualenv at $1 with pip's hash-checked installs of the requirement files after it
# (scripts/install.sh: uv, and torch's CPU build).
#
#   bash scripts/bootstrap.sh VENV -r requirements/uv.lock [-r requirements/bootstrap.lock]
#
# pip's own configuration decides where torch comes from: a folder of wheels in PIP_FIND_LINKS,
# or an index in PIP_EXTRA_INDEX_URL. Where pip finds no CPU build there, it is taken from the
# PyTorch CPU index (TEXTOPS_TORCH_CPU_INDEX, to use a mirror), the lock's hashes checking every
# wheel as before, and one line says so.
set -euo pipefail
venv="$1"
shift
python3 -m venv --clear "$venv"  # a fresh environment: exactly the lock, nothing left over
torch_cpu_index="${TEXTOPS_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
pip_install=("$venv/bin/pip" install -q --require-hashes --no-deps "$@")
log="$venv/bootstrap.log"
if ! "${pip_install[@]}" 2>"$log"; then
  installed=no
  if grep -q "requirement torch==.*+cpu" "$log"; then
    echo "scripts/bootstrap.sh: pip finds no torch CPU build where it looks; taking it from $torch_cpu_index (hashes checked)"
    "${pip_install[@]}" --extra-index-url "$torch_cpu_index" 2>"$log" && installed=yes
  fi
  if [ "$installed" = no ]; then
    cat "$log" >&2
    cat >&2 <<MSG
scripts/bootstrap.sh: pip could not install $*
(for the CPU build, torch==2.13.0+cpu is taken from where pip looks, else from
$torch_cpu_index). Put the torch wheel in a folder and export PIP_FIND_LINKS=/that/folder, or
point TEXTOPS_TORCH_CPU_INDEX at a mirror of the PyTorch CPU index, then run this again.
MSG
    exit 1
  fi
fi
