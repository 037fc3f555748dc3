#!/usr/bin/env bash
# Creates .venv with recplane and everything its tests need. Idempotent: a second
# run only re-installs the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "recplane needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet)
stamp=.venv/.recplane-deps
want=$(cat pyproject.toml hack/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing dependencies into .venv (first run downloads torch, a few minutes)"
  # TorchRec 1.8 declares a dependency on `fbgemm-gpu` (the CUDA build). On a
  # machine without an NVIDIA driver that library does not load, so TorchRec
  # goes in without its dependencies and the matching fbgemm build is chosen here.
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then fbgemm=fbgemm-gpu==1.8.0; else fbgemm=fbgemm-gpu-cpu==1.8.0; fi
  "${pip[@]}" --upgrade pip setuptools wheel
  "${pip[@]}" torch==2.13.0 "torchmetrics==1.0.3" pyre-extensions tensordict tqdm
  "${pip[@]}" --no-deps torchrec==1.8.0 "$fbgemm"
  "${pip[@]}" -e ".[serve,dev]"
  echo "$want" > "$stamp"
else
  "${pip[@]}" --no-deps -e .
fi
