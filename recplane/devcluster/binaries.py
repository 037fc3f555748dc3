"""Locating (and building) the dev-cluster binaries.

``hack/build-cluster-bins.sh`` builds everything from the Go module proxy into
``$RECPLANE_CACHE/bin/<name>-<version>/<name>`` and records the paths in
``bin/clusterbins.json``; the versions are pinned only in that script.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from recplane.devcluster.errors import DevClusterError

NAMES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kwok-stages",
    "helm",
    "minio",
    "mc",
)

# Only present in a source checkout, not in an installed wheel.
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "build-cluster-bins.sh"


def cache_dir() -> Path:
    return Path(os.environ.get("RECPLANE_CACHE") or Path.home() / ".cache" / "recplane")


def find_binaries() -> dict[str, Path]:
    """Paths of the already-built binaries; raises if any is missing."""
    manifest = cache_dir() / "bin" / "clusterbins.json"
    try:
        paths = {k: Path(v) for k, v in json.loads(manifest.read_text()).items()}
    except (OSError, ValueError):
        paths = {}
    missing = [n for n in NAMES if n not in paths or not paths[n].exists()]
    if missing:
        raise DevClusterError(
            f"dev-cluster binaries not built ({', '.join(missing)} missing): "
            f"run hack/build-cluster-bins.sh or DevCluster.ensure_binaries()"
        )
    return paths


def ensure_binaries() -> dict[str, Path]:
    """Build any missing binary (seconds when cached, tens of minutes cold)."""
    if not BUILD_SCRIPT.exists():
        raise DevClusterError(
            f"{BUILD_SCRIPT.name} not found next to the recplane sources: building the "
            "dev-cluster binaries needs a source checkout of recplane"
        )
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DevClusterError(
            f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return find_binaries()
