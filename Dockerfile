# syntax=docker/dockerfile:1
# st-imagegen beside SillyTavern. Build:  docker build -t st-imagegen .
# Match the owner of SillyTavern's files (the official ST image runs as node, 1000:1000):
#   docker build --build-arg UID=1000 --build-arg GID=1000 -t st-imagegen .
# or at run time: docker run --user 1001:1001 ... (/state is world-writable, the rest read-only).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY extension ./extension
# Wheels for the package and every dependency; the final stage installs them offline.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG UID=1000
ARG GID=1000
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    ST_IMAGEGEN_CONFIG=/config/config.toml \
    ST_IMAGEGEN_STATE_DIR=/state \
    ST_IMAGEGEN_DATA_ROOT=/data
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels /wheels/st_imagegen-*.whl \
    && groupadd --gid "${GID}" stimg \
    && useradd --uid "${UID}" --gid "${GID}" --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin stimg \
    && mkdir -p /config /state /data \
    && printf '%s\n' \
       '# Empty on purpose: every key has a default or comes from ST_IMAGEGEN_* variables.' \
       '# Mount your own config.toml over this file (st-imagegen config example prints one).' \
       > /config/config.toml \
    && chown "${UID}:${GID}" /state \
    && chmod 1777 /state
USER ${UID}:${GID}
VOLUME ["/state"]
# SIGTERM starts the drain; limits.drain_seconds (default 7 s) fits Docker's 10 s stop timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["st-imagegen", "healthcheck"]
ENTRYPOINT ["st-imagegen"]
CMD ["run"]
