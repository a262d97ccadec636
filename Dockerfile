# One image for the gateway, dev_idp and upstream_demo; the command chooses which one runs.
#   docker build -t cognito-gateway .
#   docker run --env-file .env -p 8000:8000 cognito-gateway                   # the gateway (default)
#   docker run cognito-gateway python -m dev_idp --host 0.0.0.0              # the development IdP
# Dependencies are pinned by constraints.txt, the same file `make` and CI install from.
#
# BASE_IMAGE: any Debian bookworm image with Python 3.11 and `python -m venv` (the default is the official one);
# `make image-test` builds on one made from Debian's own packages. A private package index goes in as build args
# of the build stage only, e.g. --build-arg PIP_INDEX_URL=https://pypi.internal/simple; nothing of it reaches
# the final stage.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway
COPY dev_idp ./dev_idp
COPY upstream_demo ./upstream_demo
# A virtual environment that the final stage copies whole: no compilers or build tools follow it there.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "gateway.healthcheck"]
CMD ["python", "-m", "gateway"]
