#!/usr/bin/env bash
# Build the Dagster code-location image from the top-level Dockerfile without a Docker daemon
# (buildah, chroot isolation, host network) and check that its code server answers.
#
#   scripts/build_pipeline_image.sh [IMAGE_NAME]
#
# Needs root. Uses the local base image python:3.11-slim that scripts/containerize.sh builds.
# Where the PyTorch CPU index is unreachable, a local CPU torch wheel in $WHEELS (default
# /opt/wheels) is mounted into the build and used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-textops-pipeline:latest}
wheels=${WHEELS:-/opt/wheels}
export BUILDAH_ISOLATION=chroot

for tool in buildah podman; do
  command -v "$tool" >/dev/null || { apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc >/dev/null; }
done
podman image exists python:3.11-slim || SMOKE_TEST=0 scripts/containerize.sh --base-only

args=(--network host -t "$image")
if compgen -G "$wheels/torch-*+cpu-*.whl" >/dev/null; then
  args+=(--volume "$wheels:/wheels:ro" --build-arg TORCH_INDEX= --build-arg PIP_FIND_LINKS=/wheels)
fi
buildah bud "${args[@]}" .
echo "built image $image"

if [ "${SMOKE_TEST:-1}" = "1" ]; then
  name=textops-pipeline-smoke-$$
  podman run -d --rm --name "$name" --runtime runc --network host \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 "$image" >/dev/null
  trap 'podman stop -t 5 "$name" >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 1 60); do
    if podman exec "$name" dagster api grpc-health-check -p 4000 >/dev/null 2>&1; then
      echo "code server healthy"; exit 0
    fi
    sleep 2
  done
  echo "code server did not become healthy" >&2
  podman logs "$name" | tail -40 >&2
  exit 1
fi
