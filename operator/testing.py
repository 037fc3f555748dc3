"""Run the operator against a cluster from outside it: for tests, benchmarks and trying it out.

    env = OperatorEnvironment(kubeconfig, kubectl, store_settings)
    env.install(crds_dir)                        # CRDs, kopf peering, ServiceAccount + RBAC
    env.namespace("team-a")                      # restricted Pod Security + the store Secret
    op = env.operator("--standalone").start()    # runs as the ServiceAccount: RBAC is exercised
    op.wait_healthy(); ...; op.kill()

Nothing here is imported by the operator itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from recplane.operator import peering, rbac
from recplane.store import Manifest, Store

Obj = dict[str, Any]
OPERATOR_NAMESPACE = "recplane-system"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def publish(store: Store, namespace: str, kind: str, name: str, version: str, status: Mapping[str, Any]) -> Manifest:
    """Store a version the way a step does (files, then the manifest last): simulates a step's output."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "part-0.bin").write_bytes(version.encode())
        manifest = Manifest(kind=kind.lower(), namespace=namespace, name=name, version=version, status=dict(status))
        return store.publish(Path(tmp), manifest)


@dataclass
class Kubectl:
    binary: Path
    kubeconfig: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __call__(self, *args: object, input: Any = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = json.dumps(input) if isinstance(input, (dict, list)) else input
        proc = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *map(str, args)],
            input=text,
            capture_output=True,
            text=True,
            env=dict(self.env),
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def json(self, *args: object) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, objs: Sequence[Obj] | Obj, *args: object) -> None:
        items = [objs] if isinstance(objs, dict) else list(objs)
        self(
            "apply",
            "--server-side",
            "--force-conflicts",
            *args,
            "-f",
            "-",
            input={"apiVersion": "v1", "kind": "List", "items": items},
        )


class OperatorProcess:
    """`recplane operator run` as a child process (own process group, so a kill takes all of it)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.args = [
            sys.executable, "-m", "recplane.cli.operator_cmd", "run",
            f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}", *args,
        ]  # fmt: skip
        self.env = dict(env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        def healthy() -> bool:
            if not self.alive():
                raise RuntimeError(f"the operator exited ({self.proc and self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the operator's /healthz", healthy, timeout)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Graceful stop (SIGTERM: kopf finishes its handlers and leaves the peering)."""
        self.kill(signal.SIGTERM)

    def metrics(self) -> dict[str, float]:
        """Samples of the /metrics endpoint: {'name{label="v",...}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class OperatorEnvironment:
    """A cluster prepared for the operator: what the Helm chart would install, done with kubectl."""

    kubectl: Kubectl
    store_settings: Mapping[str, str]
    """RECPLANE_STORE and RECPLANE_S3_* as the operator and its pods see them."""
    workdir: Path
    store_secret: str = rbac.STORE_SECRET
    _sa_kubeconfig: Path | None = None

    def install(self, crds_dir: Path) -> None:
        k = self.kubectl
        k("apply", "--server-side", "--force-conflicts", "-f", str(crds_dir))
        k.apply(peering.crds())
        k("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=recplane")
        k("create", "namespace", OPERATOR_NAMESPACE, check=False)
        k.apply([peering.peering_object(), *rbac.manifests(OPERATOR_NAMESPACE, store_secret=self.store_secret)])

    def namespace(self, name: str, restricted: bool = True, secret: bool = True) -> str:
        """A namespace for recplane resources: Pod Security `restricted` enforced, the store Secret in it."""
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if restricted else {}
        self.kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        if secret:
            self.kubectl.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": self.store_secret, "namespace": name},
                    "stringData": dict(self.store_settings),
                }
            )
        return name

    def service_account_kubeconfig(self) -> Path:
        """A kubeconfig that acts as the operator's ServiceAccount, so every request goes through its RBAC."""
        if self._sa_kubeconfig is None:
            token = self.kubectl(
                "create", "token", rbac.OPERATOR_NAME, "-n", OPERATOR_NAMESPACE, "--duration=24h"
            ).stdout.strip()
            config = self.kubectl.json("config", "view", "--raw", "--minify")
            user = config["contexts"][0]["context"]["user"]
            config["users"] = [{"name": user, "user": {"token": token}}]
            path = self.workdir / "operator.kubeconfig"
            path.write_text(json.dumps(config))
            path.chmod(0o600)
            self._sa_kubeconfig = path
        return self._sa_kubeconfig

    def operator(self, *args: str, log_name: str = "operator.log") -> OperatorProcess:
        env = {
            **os.environ,
            **self.store_settings,
            "KUBECONFIG": str(self.service_account_kubeconfig()),
            "RECPLANE_STORE_SECRET": self.store_secret,
            "RECPLANE_CACHE": str(self.workdir / "cache"),
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        return OperatorProcess(["--log-format=full", *args], env, self.workdir / log_name)
