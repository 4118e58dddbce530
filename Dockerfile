# proget-gateway container image.
#
#   docker build -t proget-gateway:0.1.0 .
#   docker run --read-only -p 8080:8080 -v ./gateway.yaml:/etc/proget-gateway/config.yaml:ro proget-gateway:0.1.0
#
# Two stages, as in uv's Docker guide: the build stage makes a virtualenv and installs the gateway
# into it, pinned by requirements.lock; the runtime stage copies only that virtualenv, so no pip
# cache, no build backend and no source tree ship. BASE must provide python3 (with venv) at the same
# path in both stages, because a virtualenv points at its interpreter by absolute path.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/proget-gateway
# Dependencies first, in their own layer: a change to the gateway's code does not reinstall them.
COPY pyproject.toml requirements.lock ./
RUN python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > runtime-deps.txt \
 && /opt/proget-gateway/bin/pip install -c requirements.lock -r runtime-deps.txt
COPY README.md ./
COPY config/demo.yaml config/demo.yaml
COPY gateway gateway
RUN /opt/proget-gateway/bin/pip install -c requirements.lock . \
 && /opt/proget-gateway/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/proget-gateway/lib

FROM ${BASE} AS runtime
# A fixed, numeric, non-root identity: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --gid 10001 proget-gateway \
 && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin proget-gateway
COPY --from=build /opt/proget-gateway /opt/proget-gateway
# Nothing is written at run time (bytecode is compiled above), so the root filesystem can be read-only.
ENV PATH=/opt/proget-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROGET_GATEWAY_CONFIG=/etc/proget-gateway/config.yaml \
    PROGET_GATEWAY_HEALTHCHECK_URL=http://127.0.0.1:9090/healthz
USER 10001:10001
EXPOSE 8080 9090
# The admin port's liveness endpoint, with the interpreter the image already has (no curl needed).
# Point PROGET_GATEWAY_HEALTHCHECK_URL elsewhere if the config moves the admin port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['PROGET_GATEWAY_HEALTHCHECK_URL'], timeout=4)"]
# Metadata last: a new revision or build time does not invalidate the cached layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="proget-gateway" \
      org.opencontainers.image.description="Authenticating reverse proxy for Inedo ProGet: client tokens in, scoped ProGet API keys out." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT"
ENTRYPOINT ["proget-gateway"]
CMD ["serve"]
