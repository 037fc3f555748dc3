"""Launching a training run under torchrun on this machine (the local runner's way in)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from recplane.store import Manifest

from .errors import TrainError


def training_env(nproc: int) -> dict[str, str]:
    """Environment of the `nproc` training processes of one machine.

    Each process gets its share of this process's cores as intra-op threads, so the processes
    share the cores instead of oversubscribing them (one thread each for 2 processes on 2 cores;
    one process may use them all). And PyTorch's CPU allocator madvises allocations of 2 MiB and
    more for transparent huge pages (read once, at start-up): embedding lookups hit random rows of
    tables of hundreds of MB, and with 4 KiB pages most of them also miss the TLB, which took
    about 15% off the embedding forward and backward on the Criteo-shaped benchmark's tables.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, nproc))), "THP_MEM_ALLOC_ENABLE": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(spec_path: Path | str, nproc: int, port: int | None = None) -> list[str]:
    """`python -m torch.distributed.run ... -m recplane.cli.main step train --spec FILE` on 127.0.0.1."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--nnodes=1",
        "--master-addr=127.0.0.1",
        f"--master-port={port or free_port()}",
        "-m",
        "recplane.cli.main",
        "step",
        "train",
        "--spec",
        str(spec_path),
    ]


def run_torchrun(
    spec_path: Path | str,
    nproc: int = 2,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float | None = None,
) -> Manifest:
    """Train the TrainJob in `spec_path` with `nproc` local processes; returns the stored version's manifest.

    `env` adds to this process's environment (e.g. RECPLANE_STORE); stderr (progress) goes to
    `log_path` when given, else to this process's stderr. The processes split the cores between
    them (see `training_env`).
    """
    full_env = {**os.environ, **training_env(nproc), **(env or {})}
    stderr = log_path.open("wb") if log_path else None
    try:
        proc = subprocess.run(
            torchrun_command(spec_path, nproc),
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=timeout,
            check=False,
        )
    finally:
        if stderr is not None:
            stderr.close()
    lines = [line for line in proc.stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        where = f"; see {log_path}" if log_path else ""
        raise TrainError("torchrun", f"training {spec_path} failed with exit status {proc.returncode}{where}")
    return Manifest.model_validate(json.loads(lines[-1]))
