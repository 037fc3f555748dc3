# syntax=docker/dockerfile:1
# recplane serving: the BentoML service that loads a model version and scores
# requests with the same feature transforms as training. Carries the training stack
# for the model classes (not the training loop) and BentoML; no dev tools.
#
#   docker build -f images/serving.Dockerfile -t recplane/serving:0.1.0 .
#   docker build -f images/serving.Dockerfile --build-arg VARIANT=cpu -t recplane/serving:0.1.0-cpu .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCHREC_VERSION=1.8.0
ARG FBGEMM_VERSION=1.8.0
ARG TORCHMETRICS_VERSION=1.0.3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/recplane
ENV PATH=/opt/recplane/bin:$PATH
RUN case "${VARIANT}" in \
      cuda) fbgemm="fbgemm-gpu==${FBGEMM_VERSION}" ;; \
      cpu) fbgemm="fbgemm-gpu-cpu==${FBGEMM_VERSION}" ;; \
      *) echo "VARIANT must be cuda or cpu, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && pip install "torch==${TORCH_VERSION}" "torchmetrics==${TORCHMETRICS_VERSION}" pyre-extensions tensordict tqdm \
 && pip install --no-deps "torchrec==${TORCHREC_VERSION}" "${fbgemm}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY recplane recplane
COPY operator operator
COPY trainer trainer
COPY serving serving
# `serve` extra only: the training stack is in place above (see trainer.Dockerfile).
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip install "$(ls /wheels/recplane-*.whl)[serve]" \
 && python -c "import bentoml, torchrec, recplane.serving" \
 && recplane serve --help >/dev/null

FROM ${PYTHON_IMAGE}
COPY --from=builder /opt/recplane /opt/recplane
# BENTOML_HOME under /tmp: BentoML writes its store there and the root filesystem is read-only.
ENV PATH=/opt/recplane/bin:$PATH \
    HOME=/tmp \
    BENTOML_HOME=/tmp/bentoml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
EXPOSE 3000
ENTRYPOINT ["recplane"]
CMD ["serve", "--help"]
