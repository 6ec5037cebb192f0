#!/usr/bin/env bash
# Build and smoke-test the container image of a bento without a Docker daemon:
# buildah (chroot isolation, host network) builds, podman (runc) runs.
#
#   scripts/containerize.sh BENTO_TAG [IMAGE_NAME]
#
# Needs root. Installs Debian's buildah, podman, runc and debootstrap when missing, and builds
# the base image the generated Dockerfile names (python:3.11-slim) from Debian bookworm when no
# registry can provide it. Set SMOKE_TEST=0 to skip running the image.
set -euo pipefail
cd "$(dirname "$0")/.."

bento_tag=${1:?usage: scripts/containerize.sh BENTO_TAG [IMAGE_NAME] | --base-only}
image=${2:-textops:${bento_tag#*:}}
bentoml=${BENTOML:-.venv/bin/bentoml}
export BUILDAH_ISOLATION=chroot BENTOML_DO_NOT_TRACK=true

need=()
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! podman image exists python:3.11-slim; then
  # The same Debian release and Python minor version as the official python:3.11-slim.
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >/dev/null
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # uv (the image's installer) verifies TLS with its own roots unless told to use the system's,
  # and this machine's network may need the CA bundle copied above.
  tar -C "$root" -c . | podman import --change 'CMD ["python3"]' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV UV_NATIVE_TLS=true' - python:3.11-slim >/dev/null
  rm -rf "$root"
fi

if [ "$bento_tag" = "--base-only" ]; then
  exit 0
fi

"$bentoml" containerize "$bento_tag" --backend buildah -t "$image" --opt network=host
echo "built image $image"

if [ "${SMOKE_TEST:-1}" = "1" ]; then
  port=${PORT:-3999}
  name=textops-smoke-$$
  podman run -d --rm --name "$name" --runtime runc --network host \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 "$image" serve --port "$port" >/dev/null
  trap 'podman stop -t 5 "$name" >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then break; fi
    sleep 2
  done
  curl -sf -X POST "http://127.0.0.1:$port/classify" -H 'content-type: application/json' \
    -d '{"texts": ["what a wonderful day"]}'
  echo
fi
