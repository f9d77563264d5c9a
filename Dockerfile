# syntax=docker/dockerfile:1
# costwatch container image: `docker build -t costwatch .` from the repository root.
# Two stages: `build` turns the project into a wheel and installs it with its pinned runtime
# dependencies into /opt/venv; `runtime` copies only that venv onto a clean base, so no build
# tool, source tree or pip cache ends up in the image. tests/test_deploy_packaging.py runs the
# same pip commands without a Docker engine and checks what this file promises;
# tests/test_image.py builds it with buildah (on a Debian-made PYTHON_IMAGE) and runs it with
# podman. Build with `--format docker` there: the OCI format has no HEALTHCHECK.

# Pinned by version (and the same for both stages: the venv's python symlinks point into it).
# Bump deliberately, e.g. with Renovate; add @sha256:... to pin the exact image too.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore): a change to tests or docs keeps
# the layer cache. config/demo.yaml is packaged into the wheel for `costwatch demo`.
COPY pyproject.toml README.md requirements.lock ./
COPY config/demo.yaml config/demo.yaml
COPY costwatch/ costwatch/
# The wheel alone (--no-deps), then a venv with it and exactly the locked runtime
# dependencies: --constraint pins every package pip resolves, --only-binary keeps a compiler
# out of the build (every locked package ships wheels for linux/amd64 and arm64). pip compiles
# the .pyc files here, so nothing needs writing at run time.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --only-binary=:all: --constraint requirements.lock /wheels/costwatch-*.whl \
 && /opt/venv/bin/python -m pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/your-org/costwatch
LABEL org.opencontainers.image.title="costwatch" \
      org.opencontainers.image.description="Keeps a Langdock workspace's API spend inside its budgets: alerts in Slack, Prometheus metrics on :9108." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (Compose read_only, Kubernetes
# readOnlyRootFilesystem). PYTHONUNBUFFERED: log lines reach `docker logs` as they happen.
# TMPDIR: SQLite and `costwatch demo` write temporary files there; mount a tmpfs (Compose
# `tmpfs: /tmp`, Kubernetes an emptyDir) when the root filesystem is read-only.
# COSTWATCH_METRICS_LISTEN: where /metrics, /healthz and /readyz listen. The default config
# reads it (`metrics.listen: ${COSTWATCH_METRICS_LISTEN:-...}`) and the HEALTHCHECK below
# probes it, so `-e COSTWATCH_METRICS_LISTEN=0.0.0.0:9200` moves both together.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    COSTWATCH_METRICS_LISTEN=0.0.0.0:9108

# A fixed, unprivileged UID/GID (10001, outside the range distributions hand out), so volume
# ownership, Kubernetes runAsUser/fsGroup and host bind mounts can name it. The state
# directory is created owned by it: a fresh named volume copies that ownership.
RUN groupadd --system --gid 10001 costwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/costwatch --no-create-home \
        --shell /usr/sbin/nologin costwatch \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/costwatch

COPY --from=build /opt/venv /opt/venv
# The default configuration reads its secrets from the environment (LANGDOCK_API_KEY,
# SLACK_BOT_TOKEN); mount your own file over it (read-only is fine).
COPY config/costwatch.yaml /etc/costwatch/config.yaml

WORKDIR /var/lib/costwatch
# state.path: the SQLite database (alert ledger, outbox, history) must outlive the container.
VOLUME ["/var/lib/costwatch"]
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# COSTWATCH_METRICS_LISTEN's port: /metrics, /healthz, /readyz.
EXPOSE 9108

# Liveness only (/healthz: the process and its scheduler run); /readyz also fails while
# exports are stale, which is an alert, not a reason to restart. The port (and address) come
# from COSTWATCH_METRICS_LISTEN, as the default config's metrics.listen does; a wildcard
# address (0.0.0.0, [::]) is probed on loopback. A config of your own that sets metrics.listen
# to a literal must set COSTWATCH_METRICS_LISTEN to the same value. No curl in a slim image:
# urlopen raises on refusal or a non-2xx answer, which exits 1. With metrics basic auth or
# TLS on, override or disable this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; host, _, port = os.environ['COSTWATCH_METRICS_LISTEN'].rpartition(':'); host = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]'}.get(host, host); urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=3)"]

# Exec form: costwatch is PID 1 and receives SIGTERM itself (it finishes the running cycle
# within schedule.shutdown_grace, flushes pending alerts and exits 0); a shell would swallow
# the signal and Docker would SIGKILL after its timeout. `docker run IMAGE demo` or
# `... validate --config FILE` run the other commands.
ENTRYPOINT ["costwatch"]
CMD ["run", "--config", "/etc/costwatch/config.yaml"]
