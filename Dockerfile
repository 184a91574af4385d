# The syncd image: one venv with syncd[all] on a Debian/Python base, run as a non-root user,
# fit for a read-only root filesystem. See docs/image.md.
#
# The context holds the source and, in wheels/, every dependency as a wheel for the base's
# Python; the build installs from there only (no index), so it needs no network:
#
#   scripts/build-image            # makes the base, the wheels and the context, then builds
#   docker build --network none --build-arg BASE_IMAGE=syncd-base:bookworm -t syncd:dev CONTEXT
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11), its venv module, groupadd and
# useradd. Few instructions on purpose: the classic builder makes a container for each, and on
# the vfs storage driver every one copies the whole filesystem.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# pyproject.toml, README.md, syncd/, providers/ and wheels/ (the .dockerignore keeps the rest out)
COPY . /src/
# syncd's wheel is built here from source, its build backend also from /src/wheels; pip
# compiles every module to bytecode now, because the running image may not write any. The
# installer is removed afterwards: nothing installs at run time.
RUN python3 -m venv /opt/syncd \
 && /opt/syncd/bin/pip install --quiet --no-index --find-links /src/wheels \
      --disable-pip-version-check --no-cache-dir "/src[all]" \
 && /opt/syncd/bin/syncd --help >/dev/null \
 && /opt/syncd/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="syncd" \
      org.opencontainers.image.description="Syncs secrets from Vault/OpenBao, AWS and Azure into Docker Swarm, Kubernetes or files" \
      org.opencontainers.image.licenses="Apache-2.0"
# Nothing may write outside mounted volumes: no bytecode caches, no buffered log lines.
ENV PATH=/opt/syncd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNCD_CONFIG=/etc/syncd/syncd.yaml
ENTRYPOINT ["syncd"]
# A fixed uid/gid so volume ownership, Kubernetes runAsUser and Swarm config/secret uids can
# name it; no home directory and no login shell: the process needs neither.
RUN groupadd --gid 10001 syncd \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin syncd
COPY --from=builder /opt/syncd /opt/syncd
USER 10001:10001
