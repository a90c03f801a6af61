# syntax=docker/dockerfile:1.7
# One image for every modeltrust component:
#   modeltrust operator ...        the kopf operator (the chart's Deployment)
#   modeltrust ledger serve ...    the ledger (the chart's StatefulSet)
#   modeltrust fetch ... / serve   the model server pods' init step and server
#
# Build (BuildKit, the default since Docker 23):  docker build -t modeltrust:0.1.0 .
#
# The base image is pinned by tag here because this repository is built on machines that
# cannot reach a container registry. Pin it by digest where you build, for example
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line)
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
# tests/dockerfile/ runs this file's RUN and ENTRYPOINT commands in a clean virtual
# environment, so keep every command a plain shell line that uses the variables below.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: wheels of every dependency, hash-checked against requirements/runtime.txt, and of
# the four components, built from this tree
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    WHEELS=/wheels
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
COPY chain/ chain/
COPY serving/ serving/
COPY operator/ operator/
COPY cli/ cli/
# The only step that reaches the network. Where PyPI's TLS chain needs a certificate authority
# that only the build host trusts, pass the host's bundle as the secret "build-ca"
# (--secret id=build-ca,src=/etc/ssl/certs/ca-certificates.crt): it is mounted for this step
# only, never stored in a layer, and this stage is not shipped anyway.
# Every dependency comes as a wheel whose sha256 is in the lock (--require-hashes; a package
# with no wheel for this platform fails here, by name); the components' own wheels need the
# build backend (hatchling) from the index. The lock goes along to the runtime stage.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then \
      export PIP_CERT=/run/secrets/build-ca REQUESTS_CA_BUNDLE=/run/secrets/build-ca SSL_CERT_FILE=/run/secrets/build-ca; \
    fi \
    && python3 -m pip download --dest "$WHEELS" --require-hashes --no-deps --only-binary=:all: -r requirements/runtime.txt \
    && python3 -m pip wheel --wheel-dir "$WHEELS" --no-deps ./chain ./serving ./operator ./cli \
    && cp requirements/runtime.txt "$WHEELS/runtime.txt"

# ---------------------------------------------------------------------------------------------
# runtime: wheels only (no compilers, no sources), a virtual environment, a non-root user
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="modeltrust" \
      org.opencontainers.image.description="Verified rollout of ONNX models: operator, ledger, model server" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WHEELS=/wheels \
    VENV=/opt/modeltrust
ENV PATH="${VENV}/bin:${PATH}"
# Bytecode is compiled at install time, so the root filesystem can be mounted read-only.
# The dependencies exactly as locked (hashes checked again), then the four components without
# resolving anything; pip check fails the build if the lock misses something they require.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv "$VENV" \
    && "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELS" --require-hashes --no-deps --compile -r "$WHEELS/runtime.txt" \
    && "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELS" --no-deps --compile "$WHEELS"/modeltrust_*.whl \
    && "$VENV/bin/python" -m pip check \
    && "$VENV/bin/python" -m pip uninstall --yes pip
# A numeric uid/gid, so Kubernetes can check runAsNonRoot without reading /etc/passwd; the
# chart runs the pods as this user (runAsUser: 65532).
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["modeltrust"]
CMD ["--help"]
