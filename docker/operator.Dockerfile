# The sloserve operator image: `sloserve operator` (kopf) plus the `sloserve` CLI.
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/sloserve/operator:0.1.0 .
#
# Multi-stage: dependencies are installed into a virtualenv in the build stage; the final stage copies only
# that venv onto the same slim base, runs as an unprivileged user (10001, matching the chart's
# securityContext) and needs no writable root filesystem (the chart mounts an emptyDir on /tmp).
# The base is pinned to an exact Python/Debian release; pin it by digest as well in release builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest> ...
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sloserve
# Metadata first so the dependency layer is cached across source-only changes.
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN /opt/sloserve/bin/pip install ".[operator]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sloserve-operator" \
      org.opencontainers.image.description="Latency-SLO-driven LLM serving: the ModelService operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/sloserve/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
COPY --from=build /opt/sloserve /opt/sloserve
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["sloserve"]
CMD ["operator", "--all-namespaces"]
