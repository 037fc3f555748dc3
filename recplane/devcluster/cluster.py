"""A real Kubernetes cluster made of local processes, without a container engine.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the
upstream binaries; kwok plays the kubelet for a few fake nodes (pods become
Running, Job pods Succeeded, nothing is executed); MinIO provides S3.
Everything listens on 127.0.0.1 on free ports. The cluster is ephemeral:
``start()`` always begins from empty etcd/MinIO data.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recplane.devcluster import process
from recplane.devcluster.binaries import ensure_binaries, find_binaries
from recplane.devcluster.errors import DevClusterError

SERVICE_CIDR = "10.96.0.0/16"
NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
COMPONENTS = ("etcd", "minio", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Stopped tier by tier: etcd and the API server exit at once when their clients
# are gone, but each takes ~10 s draining connections while they are still there.
_STOP_TIERS = (("kube-apiserver",), ("etcd",))
# Files and directories start() owns inside the state dir (it wipes only these).
_OWNED = ("cluster.json", "kubeconfig", "pki", "etcd", "minio", "logs", "mc")


def default_state_dir() -> Path:
    env = os.environ.get("RECPLANE_STATE_DIR")
    return Path(env) if env else Path.home() / ".local" / "state" / "recplane" / "dev-cluster"


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    alive: bool
    log: Path


@dataclass(frozen=True)
class ClusterStatus:
    state_dir: Path
    running: bool  # every component process is alive
    server: str | None
    kubeconfig: Path | None
    minio_endpoint: str | None
    processes: tuple[ProcessStatus, ...]


class DevCluster:
    """Start/stop a local cluster whose state (pids, ports, credentials) lives
    in ``state_dir``, so another process can inspect or stop it."""

    def __init__(
        self, state_dir: str | Path | None = None, *, nodes: int = 3, binaries: Mapping[str, Path] | None = None
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.nodes = nodes
        self._bins = dict(binaries) if binaries else None
        self._popen: dict[str, subprocess.Popen] = {}  # only in the process that started them
        self._state: dict[str, Any] = self._load_state()

    # ----------------------------------------------------------------- binaries
    def ensure_binaries(self) -> dict[str, Path]:
        """Build missing binaries with hack/build-cluster-bins.sh (source checkouts only)."""
        self._bins = ensure_binaries()
        return self._bins

    def _binaries(self) -> dict[str, Path]:
        if self._bins is None:
            self._bins = find_binaries()
        return self._bins

    # --------------------------------------------------------------- properties
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self._binaries()["kubectl"]

    @property
    def helm(self) -> Path:
        return self._binaries()["helm"]

    @property
    def mc(self) -> Path:
        return self._binaries()["mc"]

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._need('ports')['kube-apiserver']}"

    @property
    def minio_endpoint(self) -> str:
        return f"127.0.0.1:{self._need('ports')['minio']}"

    @property
    def minio_access_key(self) -> str:
        return self._minio_credentials()["access_key"]

    @property
    def minio_secret_key(self) -> str:
        return self._minio_credentials()["secret_key"]

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) plus what tools need to reach this
        cluster: KUBECONFIG, our kubectl/helm/mc first on PATH, S3 settings."""
        env = dict(os.environ if base is None else base)
        key, secret, endpoint = self.minio_access_key, self.minio_secret_key, self.minio_endpoint
        tool_dirs = dict.fromkeys(str(self._binaries()[n].parent) for n in ("kubectl", "helm", "mc"))
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "PATH": os.pathsep.join([*tool_dirs, env.get("PATH", os.defpath)]),
                "MINIO_ENDPOINT": endpoint,
                "MINIO_ACCESS_KEY": key,
                "MINIO_SECRET_KEY": secret,
                "AWS_ACCESS_KEY_ID": key,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_ENDPOINT_URL": f"http://{endpoint}",
                "AWS_REGION": "us-east-1",
                "MC_HOST_recplane": f"http://{key}:{secret}@{endpoint}",
                "MC_CONFIG_DIR": str(self.state_dir / "mc"),
            }
        )
        return env

    # ------------------------------------------------------------------- status
    def status(self) -> ClusterStatus:
        self._state = self._load_state()
        procs = tuple(
            ProcessStatus(name, p["pid"], process.alive(p["pid"], p["start_time"]), Path(p["log"]))
            for name, p in self._state.get("processes", {}).items()
        )
        ports = self._state.get("ports")
        return ClusterStatus(
            state_dir=self.state_dir,
            running=bool(procs) and len(procs) == len(COMPONENTS) and all(p.alive for p in procs),
            server=self.server if ports else None,
            kubeconfig=self.kubeconfig if self.kubeconfig.exists() else None,
            minio_endpoint=self.minio_endpoint if ports else None,
            processes=procs,
        )

    # --------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 180.0) -> None:
        """Start every component and wait until the cluster is usable: /readyz,
        the ``default`` ServiceAccount, Ready untainted nodes, MinIO ready."""
        if any(p.alive for p in self.status().processes):
            raise DevClusterError(f"a dev cluster is already running from {self.state_dir}; stop it first")
        bins = self._binaries()
        self._reset_state_dir()
        ports = dict(
            zip(
                (
                    "etcd",
                    "etcd-peer",
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "minio",
                    "minio-console",
                ),
                _free_ports(7),
                strict=False,
            )
        )
        self._state = {"ports": ports, "processes": {}}
        self._write_secrets()
        deadline = time.monotonic() + timeout
        try:
            self._spawn("etcd", self._etcd_args(bins["etcd"], ports))
            self._spawn(
                "minio",
                [
                    str(bins["minio"]),
                    "server",
                    "--quiet",
                    "--address",
                    f"127.0.0.1:{ports['minio']}",
                    "--console-address",
                    f"127.0.0.1:{ports['minio-console']}",
                    str(self.state_dir / "minio" / "data"),
                ],
                env={
                    **os.environ,
                    "MINIO_ROOT_USER": self.minio_access_key,
                    "MINIO_ROOT_PASSWORD": self.minio_secret_key,
                    "MINIO_BROWSER": "off",
                    "MINIO_UPDATE": "off",
                },
            )
            self._wait("etcd", deadline, lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"))
            self._spawn("kube-apiserver", self._apiserver_args(bins["kube-apiserver"], ports))
            self._wait("kube-apiserver /readyz", deadline, lambda: self._api("GET", "/readyz") is not None)
            self._write_kubeconfig()
            self._spawn(
                "kube-controller-manager", self._controller_manager_args(bins["kube-controller-manager"], ports)
            )
            self._spawn("kube-scheduler", self._scheduler_args(bins["kube-scheduler"], ports))
            self._spawn(
                "kwok",
                [
                    str(bins["kwok"]),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--config={bins['kwok-stages']}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=" + "=".join(NODE_ANNOTATION),
                    "--node-lease-duration-seconds=40",
                ],
            )
            for i in range(self.nodes):
                self._api("POST", "/api/v1/nodes", _node(f"kwok-node-{i}"))
            self._wait("MinIO", deadline, lambda: _http_ok(f"http://{self.minio_endpoint}/minio/health/ready"))
            self._wait(
                "the default ServiceAccount",
                deadline,
                lambda: self._api("GET", "/api/v1/namespaces/default/serviceaccounts/default") is not None,
            )
            self._wait("Ready kwok nodes", deadline, self._nodes_ready)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate every component (process groups, SIGTERM then SIGKILL)."""
        self._state = self._load_state()
        procs = self._state.get("processes", {})
        late = [n for tier in _STOP_TIERS for n in tier]
        survivors: list[int] = []
        for tier in ([n for n in procs if n not in late], *_STOP_TIERS):
            survivors += process.terminate_all(
                [(procs[n]["pid"], procs[n]["start_time"]) for n in tier if n in procs], timeout
            )
        for popen in self._popen.values():
            popen.poll()  # lets Popen record the exit status it may have missed
        self._popen.clear()
        if procs:
            self._state["processes"] = {n: p for n, p in procs.items() if p["pid"] in survivors}
            self._save_state()
        if survivors:
            raise DevClusterError(f"could not stop processes {survivors} of the dev cluster in {self.state_dir}")

    def __enter__(self) -> DevCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ command lines
    def _etcd_args(self, etcd: Path, ports: Mapping[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            str(etcd),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--log-level=warn",
            "--unsafe-no-fsync",
        ]  # throwaway data: fsync only slows tests down

    def _apiserver_args(self, apiserver: Path, ports: Mapping[str, int]) -> list[str]:
        pki = self.state_dir / "pki"
        return [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--cert-dir={pki}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Privileged pods must reach PodSecurity admission, which names the violation.
            "--allow-privileged=true",
            # The "kubernetes" Service cannot point at a loopback address.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    def _component_common(self, port: int) -> list[str]:
        # No --authentication/authorization-kubeconfig: only /healthz is served,
        # which needs neither (and they log errors about a missing client CA).
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            "--profiling=false",
            # As kwokctl runs them: the default client limit (20 requests/s per controller) would
            # make the simulated control plane, not the API server, the bottleneck under load.
            "--kube-api-qps=5000",
            "--kube-api-burst=10000",
        ]

    def _controller_manager_args(self, kcm: Path, ports: Mapping[str, int]) -> list[str]:
        pki = self.state_dir / "pki"
        return [
            str(kcm),
            *self._component_common(ports["kube-controller-manager"]),
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'apiserver.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ]

    def _scheduler_args(self, scheduler: Path, ports: Mapping[str, int]) -> list[str]:
        return [str(scheduler), *self._component_common(ports["kube-scheduler"])]

    # ------------------------------------------------------------------ helpers
    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        log = self.state_dir / "logs" / f"{name}.log"
        popen = process.spawn(args, log, dict(env) if env else None)
        self._popen[name] = popen
        self._state["processes"][name] = {
            "pid": popen.pid,
            "start_time": process.start_time(popen.pid),
            "log": str(log),
        }
        self._save_state()  # immediately, so a crashed start() can still be cleaned up by `down`

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        error: Exception | None = None
        while True:
            for name, popen in self._popen.items():
                if popen.poll() is not None:
                    raise DevClusterError(
                        f"{name} exited with {popen.returncode} while waiting for {what}:\n"
                        + _tail(self.state_dir / "logs" / f"{name}.log")
                    )
            try:
                if ready():
                    return
            except (OSError, DevClusterError, ValueError) as exc:
                error = exc
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"timed out waiting for {what} (last error: {error}); logs in {self.state_dir / 'logs'}"
                )
            time.sleep(0.2)

    def _nodes_ready(self) -> bool:
        nodes = self._api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok") or {"items": []}
        ready = [
            n
            for n in nodes["items"]
            if not n["spec"].get("taints")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        ]
        return len(ready) == self.nodes

    def _api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the API server as admin; a GET answers None while the object
        or the server is not there yet (404, 500, 503)."""
        ctx = ssl.create_default_context(cafile=str(self.state_dir / "pki" / "apiserver.crt"))
        req = urllib.request.Request(
            self.server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._state['token']}", "Content-Type": "application/json"},
        )
        try:
            with _open(req, ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if method == "GET" and exc.code in (404, 500, 503):
                return None
            raise DevClusterError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from exc
        return json.loads(raw) if raw.startswith(b"{") else raw.decode()

    def _reset_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        for name in _OWNED:
            path = self.state_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for sub in ("pki", "etcd", "minio/data", "logs", "mc"):
            (self.state_dir / sub).mkdir(parents=True, mode=0o700)

    def _write_secrets(self) -> None:
        pki = self.state_dir / "pki"
        self._state["token"] = secrets.token_hex(32)
        _write_private(pki / "tokens.csv", f'{self._state["token"]},admin,admin,"system:masters"\n')
        _write_private(
            self.state_dir / "minio" / "credentials.json",
            json.dumps({"access_key": f"recplane-{secrets.token_hex(4)}", "secret_key": secrets.token_urlsafe(30)}),
        )
        try:
            subprocess.run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise DevClusterError(f"generating the service-account key with openssl failed: {exc}") from exc
        os.chmod(pki / "sa.key", 0o600)
        self._save_state()

    def _write_kubeconfig(self) -> None:
        # JSON is valid YAML, and keeps this module free of a YAML dependency.
        ca = (self.state_dir / "pki" / "apiserver.crt").read_bytes()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "recplane-dev",
            "clusters": [
                {
                    "name": "recplane-dev",
                    "cluster": {"server": self.server, "certificate-authority-data": base64.b64encode(ca).decode()},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self._state["token"]}}],
            "contexts": [
                {
                    "name": "recplane-dev",
                    "context": {"cluster": "recplane-dev", "user": "admin", "namespace": "default"},
                }
            ],
        }
        _write_private(self.kubeconfig, json.dumps(config, indent=2) + "\n")

    def _minio_credentials(self) -> dict[str, str]:
        try:
            return json.loads((self.state_dir / "minio" / "credentials.json").read_text())
        except OSError as exc:
            raise DevClusterError(f"no dev cluster has been started in {self.state_dir}") from exc

    def _need(self, key: str) -> Any:
        if key not in self._state:
            raise DevClusterError(f"no dev cluster has been started in {self.state_dir}")
        return self._state[key]

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        _write_private(self.state_dir / "cluster.json", json.dumps(self._state, indent=2))


def _node(name: str) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
            "annotations": {NODE_ANNOTATION[0]: NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


def _free_ports(n: int) -> list[int]:
    # Hold all sockets open until every port is chosen, so they are distinct.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _open(req: urllib.request.Request | str, ctx: ssl.SSLContext | None = None):
    # Everything is on 127.0.0.1: never go through an HTTP(S)_PROXY from the environment.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers).open(req, timeout=10)


def _http_ok(url: str) -> bool:
    try:
        with _open(url) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
