"""Fixtures for tests against a real (Docker-free) Kubernetes cluster.

``cluster`` is one DevCluster per test session; the binaries are built from the
Go module proxy on first use (tens of minutes) and cached afterwards. A missing
Go toolchain or a failed build fails the tests: they are never skipped.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recplane.devcluster import DevCluster, DevClusterError, ensure_binaries

Kubectl = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def cluster_binaries() -> dict[str, Path]:
    try:
        return ensure_binaries()
    except DevClusterError as exc:
        error = str(exc)  # fail outside the except block: no chained traceback
    pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def cluster(cluster_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    dev = DevCluster(tmp_path_factory.mktemp("dev-cluster"), binaries=cluster_binaries)
    try:
        dev.start()
        error = None
    except DevClusterError as exc:
        error = f"dev cluster did not start: {exc}"
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="session")
def kubectl(cluster: DevCluster) -> Kubectl:
    """``kubectl(*args, input=None, check=True)`` with our kubectl and kubeconfig.
    ``input`` may be a str (e.g. YAML) or a dict/list, sent as JSON."""
    env = cluster.env()

    def run(*args: object, input: str | dict | list | None = None, check: bool = True) -> subprocess.CompletedProcess:
        if isinstance(input, (dict, list)):
            input = json.dumps(input)
        cmd = [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", *map(str, args)]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run
