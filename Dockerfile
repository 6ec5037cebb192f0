# The textops Dagster code location: `dagster code-server start` on port 4000.
# Build: buildah bud --isolation chroot --network host -t textops-pipeline .  (or docker build .)
# CPU torch comes from the PyTorch CPU index; pass --build-arg TORCH_INDEX= for PyPI's CUDA build.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# A folder of local wheels (mounted at build time) that pip may take torch from instead.
ARG PIP_FIND_LINKS=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    TEXTOPS_HOME=/opt/dagster/home/textops \
    BENTOML_DO_NOT_TRACK=true

RUN groupadd --system textops && useradd --system --gid textops --create-home textops \
    && mkdir -p /opt/dagster/home /opt/textops && chown -R textops:textops /opt/dagster /opt/textops
WORKDIR /opt/textops

# Dependencies first: this layer is rebuilt only when pyproject.toml or the constraints change.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p assets orchestration data_checks bento \
    && touch assets/__init__.py orchestration/__init__.py data_checks/__init__.py bento/__init__.py \
    && pip install --upgrade "pip>=24.2" \
    && PIP_FIND_LINKS="$PIP_FIND_LINKS" pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
       -c constraints.txt ".[gcp]" \
    && pip uninstall -y textops

COPY --chown=textops:textops . .
RUN pip install --no-deps -c constraints.txt ".[gcp]"
# The instance settings this code expects (one training at a time); a Helm deployment sets the
# same in its values (docs/deploy.md).
COPY --chown=textops:textops .dagster_home/dagster.yaml /opt/dagster/home/dagster.yaml

USER textops
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
ENTRYPOINT ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "orchestration.definitions"]
