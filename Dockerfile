# dmlscope: the web app (API + UI) with its training workers. CPU image by default:
#   docker build -t dmlscope .
#   docker run -e DMLSCOPE_API_TOKEN=change-me -p 8000:8000 -v dmlscope-data:/data dmlscope
# then open http://localhost:8000 (requests that change data need 'Authorization: Bearer change-me').
# CUDA image (training and embedding on the GPU; run with --gpus all):
#   docker build --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 -t dmlscope:cuda .
# A smaller CPU-only torch: --build-arg TORCH_PIP_ARGS="--index-url <your CPU-only torch wheel index>".
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_PIP_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba \
    DMLSCOPE_DATA_DIR=/data

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The CUDA bases ship no Python 3.11: take the distribution's (its version differs per base, so it is not
# pinned); python:3.11-slim already has it.
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv /opt/venv

# torch first and pinned, as the Makefile does, so no other dependency pulls another build; its own layer,
# since it is most of the image and changes least. (DL3013 mistakes the unquoted pip options for a package.)
# hadolint ignore=SC2086,DL3013
RUN pip install ${TORCH_PIP_ARGS} torch==2.14.1 torchvision==0.29.1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY server ./server
COPY frontend ./frontend
# Editable: the server serves the UI from ../frontend next to its package, and the wheel does not carry
# frontend/ yet; /app stays read-only for the service user.
RUN pip install -e .

RUN groupadd --gid 10001 dmlscope \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin dmlscope \
    && mkdir -p /data \
    && chown dmlscope:dmlscope /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# The first start imports the built-in data set before serving: allow for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4)"]

# Off loopback the server refuses to start without DMLSCOPE_API_TOKEN (pass it with -e).
CMD ["dmlscope", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
