# syntax=docker/dockerfile:1
# recplane trainer: TorchRec training (torchrun workers of a TrainJob) and the data
# steps (`recplane step sampleset|featureset|train`).
#
#   docker build -f images/trainer.Dockerfile -t recplane/trainer:0.1.0 .                         # CUDA
#   docker build -f images/trainer.Dockerfile --build-arg VARIANT=cpu -t recplane/trainer:0.1.0-cpu .
#
# The stack mirrors hack/setup.sh: torch 2.13.0 from PyPI (its wheels bring the CUDA
# runtime; the node's driver comes in through the NVIDIA container toolkit), TorchRec
# 1.8.0 installed without its dependencies, and the fbgemm 1.8.0 build that fits the
# variant: `fbgemm-gpu` (CUDA) or `fbgemm-gpu-cpu`.
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
# The base dependencies only: the `train` extra would pull the CUDA fbgemm next to
# the CPU one; the training stack is already in place above.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip install /wheels/recplane-*.whl \
 && python -c "import torchrec, recplane.trainer" \
 && recplane step --help >/dev/null

FROM ${PYTHON_IMAGE}
COPY --from=builder /opt/recplane /opt/recplane
ENV PATH=/opt/recplane/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
# The operator sets each pod's command (a step, or torchrun over the train step).
ENTRYPOINT ["recplane"]
CMD ["step", "train", "--help"]
