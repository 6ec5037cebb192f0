# The textops Dagster code location: `dagster code-server start` on port 4000.
# Build: buildah bud --isolation chroot --network host -t textops-pipeline .  (or docker build .)
# Every package at its version in requirements/pipeline-image.lock (hash-checked): torch's CPU
# build from the PyTorch CPU index; --build-arg TORCH=cuda takes requirements/pipeline-image-gpu.lock
# (torch's CUDA build and the NVIDIA libraries from PyPI) instead.
FROM python:3.11-slim

ARG TORCH=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# A folder of local wheels (mounted at build time) that pip may take torch from instead.
ARG PIP_FIND_LINKS=""
# The CUDA build's torch brings its own CUDA libraries; a GPU node's container runtime mounts
# only the driver, and only the capabilities named in NVIDIA_DRIVER_CAPABILITIES (CUDA base
# images set it; this plain one must)
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    TEXTOPS_HOME=/opt/dagster/home/textops \
    BENTOML_DO_NOT_TRACK=true \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN groupadd --system textops && useradd --system --gid textops --create-home textops \
    && mkdir -p /opt/dagster/home /opt/textops && chown -R textops:textops /opt/dagster /opt/textops
WORKDIR /opt/textops

# Dependencies first: this layer is rebuilt only when a lock changes. pip installs uv (and, for
# the CPU image, torch's CPU build, which pip finds on the PyTorch index or in PIP_FIND_LINKS);
# uv installs the rest. Nothing is resolved: every package is pinned with its hashes.
COPY requirements/ requirements/
RUN pip install --require-hashes --no-deps -r requirements/uv.lock \
    && if [ "$TORCH" = "cpu" ]; then \
         PIP_FIND_LINKS="$PIP_FIND_LINKS" pip install --require-hashes --no-deps \
           ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r requirements/bootstrap.lock \
         && lock=requirements/pipeline-image.lock; \
       else lock=requirements/pipeline-image-gpu.lock; fi \
    && uv pip install --system --require-hashes --no-deps -r "$lock"

COPY --chown=textops:textops . .
# Editable, so that the code imported is this folder's: the bento asset builds from the folder
# holding the code (bento/bentofile.yaml, requirements/), which a copy in site-packages lacks.
RUN uv pip install --system --no-deps --no-build-isolation -e .
# The instance settings this code expects (one training at a time); a Helm deployment sets the
# same in its values (docs/deploy.md).
COPY --chown=textops:textops .dagster_home/dagster.yaml /opt/dagster/home/dagster.yaml

USER textops
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
# CMD, not ENTRYPOINT: Dagster starts runs and steps from this image with a command of their own
# (`dagster api execute_run` / `execute_step`, as a container's command or a pod's args), which
# an entrypoint would turn into arguments of the code server.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "orchestration.definitions"]
