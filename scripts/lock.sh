#!/usr/bin/env bash
# Make every lock from its inputs (pyproject.toml, constraints.txt, requirements/*.in) with uv:
#
#   scripts/lock.sh              keep each locked version that the inputs still allow
#   scripts/lock.sh --upgrade    take the newest versions the inputs allow
#   scripts/lock.sh --upgrade-package bentoml   the newest bentoml, the rest as locked
#
# Locks are for Linux x86_64 and Python 3.11 (this project's machines and images), every package
# pinned with its hashes:
#   requirements/textops.lock         the project with every extra: what scripts/install.sh installs
#   requirements/uv.lock              uv, which pip installs first everywhere
#   requirements/bootstrap.lock       torch's CPU build, which pip installs next (pip finds it)
#   requirements/pipeline-image.lock  the code-location image (Dockerfile): no dev tools;
#   requirements/pipeline-image-gpu.lock  the same with torch's CUDA build
#   requirements/textops-gpu.lock     textops.lock with torch's CUDA build (install.sh --cuda)
#   requirements/bento-*.lock         each bento's image: onnx, torch (CPU), gpu (CUDA torch)
# Every package of a derived lock is at its version in textops.lock (torch's CUDA build and the
# NVIDIA libraries of the GPU locks aside). Then run the tests, and for a new onnxruntime, torch or tokenizers the
# pipeline once: approved_model's parity check records the runtime a model was approved under.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-}
if [ -z "$uv" ]; then
  if [ -x .venv/bin/uv ]; then uv=.venv/bin/uv; else uv=uv; fi
fi
# Where torch's CPU build is found: the PyTorch CPU index, or a folder of wheels
torch_links=${TORCH_FIND_LINKS:-${PIP_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}}
target=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet
        --custom-compile-command scripts/lock.sh)
compile() { "$uv" pip compile "${target[@]}" "$@"; }

compile pyproject.toml requirements/build.in --all-extras -c constraints.txt \
  --find-links "$torch_links" "$@" -o requirements/textops.lock
python3 scripts/lock_inputs.py --stamp

locked=(-c requirements/textops.lock)
image=(pyproject.toml requirements/build.in --extra gcp --extra postgres --extra k8s --extra docker)
compile requirements/uv.in "${locked[@]}" -o requirements/uv.lock
compile requirements/bootstrap.in "${locked[@]}" --find-links "$torch_links" \
  -o requirements/bootstrap.lock
compile "${image[@]}" "${locked[@]}" --find-links "$torch_links" \
  -o requirements/pipeline-image.lock
compile requirements/bento-onnx.in "${locked[@]}" -o requirements/bento-onnx.lock
compile requirements/bento-torch.in "${locked[@]}" --find-links "$torch_links" \
  -o requirements/bento-torch.lock

# The CUDA images: torch and the NVIDIA libraries from PyPI, everything else as locked. The
# constraint file has a fixed name: uv writes its path into the locks' annotations, and a
# temporary name would change every GPU lock on every refresh.
cuda_free=requirements/textops-without-torch.txt
trap 'rm -f "$cuda_free"' EXIT
python3 - requirements/textops.lock > "$cuda_free" <<'PY'
import re, sys
for line in open(sys.argv[1]):
    pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
    if pin and pin[1].lower() != "torch":
        print(f"{pin[1]}=={pin[2]}")
PY
compile requirements/bento-gpu.in -c "$cuda_free" -o requirements/bento-gpu.lock
compile "${image[@]}" requirements/cuda.in -c "$cuda_free" -o requirements/pipeline-image-gpu.lock
compile pyproject.toml requirements/build.in requirements/cuda.in --all-extras -c "$cuda_free" \
  -o requirements/textops-gpu.lock
echo "locks written: $(ls requirements/*.lock | tr '\n' ' ')"
