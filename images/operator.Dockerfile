# syntax=docker/dockerfile:1
# recplane operator: the kopf handlers and the `recplane` command with the base
# dependencies only. No torch, TorchRec or BentoML: the image stays small and the
# operator starts in seconds (the operator imports none of them).
#
#   docker build -f images/operator.Dockerfile -t recplane/operator:0.1.0 .
#
# The base image is pinned to an exact Python patch release; release builds may
# pin it harder with a digest: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/recplane
ENV PATH=/opt/recplane/bin:$PATH
WORKDIR /src
# Metadata first so the dependency layer is cached across source edits.
COPY pyproject.toml README.md ./
COPY recplane recplane
COPY operator operator
COPY trainer trainer
COPY serving serving
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip install /wheels/recplane-*.whl \
 && recplane --help >/dev/null

FROM ${PYTHON_IMAGE}
COPY --from=builder /opt/recplane /opt/recplane
# HOME in /tmp: the chart mounts an emptyDir there and keeps the root filesystem read-only.
ENV PATH=/opt/recplane/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["recplane"]
CMD ["operator", "run", "--all-namespaces"]
