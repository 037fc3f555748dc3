"""The dev cluster is a real Kubernetes: real API server, admission, controllers
and scheduler; kwok only fakes what a kubelet would report."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recplane.devcluster import DevCluster, process

pytestmark = pytest.mark.cluster

IMAGE = "busybox:1.36"  # never pulled: kwok runs no containers


def restricted_pod_spec(**extra: object) -> dict:
    """A pod spec that satisfies the "restricted" Pod Security Standard."""
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "main",
                "image": IMAGE,
                "command": ["sleep", "3600"],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
        **extra,
    }


def restricted_namespace(kubectl, name: str) -> str:
    kubectl(
        "apply",
        "-f",
        "-",
        input={
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        },
    )
    return name


def get_json(kubectl, *args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def test_server_is_kubernetes_1_35(kubectl) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == "v1.35.4"
    assert versions["clientVersion"]["gitVersion"] == "v1.35.4"


def test_nodes_are_ready_kwok_nodes(kubectl) -> None:
    nodes = get_json(kubectl, "nodes", "-l", "type=kwok")["items"]
    assert len(nodes) == 3
    for node in nodes:
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert not node["spec"].get("taints")
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_deployment_pods_run_on_kwok_nodes(kubectl) -> None:
    ns = restricted_namespace(kubectl, "deploy-test")
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": restricted_pod_spec()},
            },
        },
    )
    kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=120s")

    kwok_nodes = {n["metadata"]["name"] for n in get_json(kubectl, "nodes", "-l", "type=kwok")["items"]}
    pods = get_json(kubectl, "pods", "-n", ns, "-l", "app=web")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in kwok_nodes
        assert pod["status"]["podIP"]


def test_job_pod_completes(kubectl) -> None:
    ns = restricted_namespace(kubectl, "job-test")
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {"backoffLimit": 0, "template": {"spec": restricted_pod_spec(restartPolicy="Never")}},
        },
    )
    kubectl("wait", "-n", ns, "--for=condition=Complete", "job/once", "--timeout=120s")

    job = get_json(kubectl, "job", "-n", ns, "once")
    assert job["status"]["succeeded"] == 1
    pods = get_json(kubectl, "pods", "-n", ns, "-l", "job-name=once")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]


def test_restricted_namespace_refuses_privileged_pod(kubectl) -> None:
    ns = restricted_namespace(kubectl, "pss-test")
    proc = kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        check=False,
        input={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "root"},
            "spec": {"containers": [{"name": "main", "image": IMAGE, "securityContext": {"privileged": True}}]},
        },
    )
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    assert "privileged" in proc.stderr
    assert kubectl("get", "pod", "-n", ns, "root", check=False).returncode != 0


def test_minio_bucket_roundtrip(cluster: DevCluster) -> None:
    payload = b"recplane says hello\n"
    try:
        from minio import Minio
    except ImportError:
        Minio = None
    env = cluster.env()
    if Minio is not None:
        s3 = Minio(
            cluster.minio_endpoint,
            access_key=cluster.minio_access_key,
            secret_key=cluster.minio_secret_key,
            secure=False,
        )
        s3.make_bucket("roundtrip")
        s3.put_object("roundtrip", "dir/hello.txt", io.BytesIO(payload), len(payload))
        resp = s3.get_object("roundtrip", "dir/hello.txt")
        try:
            assert resp.read() == payload
        finally:
            resp.close()
            resp.release_conn()
    else:
        subprocess.run([cluster.mc, "mb", "recplane/roundtrip"], env=env, check=True, capture_output=True)
        subprocess.run(
            [cluster.mc, "pipe", "recplane/roundtrip/dir/hello.txt"],
            input=payload,
            env=env,
            check=True,
            capture_output=True,
        )
    # Our mc reads back what was written, through the MC_HOST_recplane alias from env().
    out = subprocess.run(
        [cluster.mc, "cat", "recplane/roundtrip/dir/hello.txt"], env=env, check=True, capture_output=True
    )
    assert out.stdout == payload


def test_helm_installs_a_chart(cluster: DevCluster, kubectl, tmp_path: Path) -> None:
    env = cluster.env()
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / var.lower())

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cluster.helm), *args], env=env, capture_output=True, text=True, timeout=300)

    assert helm("version", "--short").stdout.startswith("v3.22.0")
    assert helm("create", str(tmp_path / "demo")).returncode == 0
    proc = helm(
        "install",
        "demo",
        str(tmp_path / "demo"),
        "--namespace",
        "helm-test",
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    )
    assert proc.returncode == 0, proc.stderr
    deploy = get_json(kubectl, "deployment", "-n", "helm-test", "demo")
    assert deploy["status"]["readyReplicas"] == 1


def test_stop_leaves_no_process(cluster_binaries, tmp_path: Path) -> None:
    dev = DevCluster(tmp_path / "state", nodes=1, binaries=cluster_binaries)
    dev.start()
    try:
        st = dev.status()
        assert st.running
        started = {p.pid: process.start_time(p.pid) for p in st.processes}
        assert len(started) == 6
    finally:
        dev.stop()
    assert [pid for pid, t in started.items() if process.alive(pid, t)] == []
    assert not dev.status().running


def test_cli_up_status_down_from_separate_processes(cluster_binaries, tmp_path: Path) -> None:
    state = tmp_path / "cli-state"

    def cli(*args: str) -> subprocess.CompletedProcess:
        code = "from recplane.cli.dev_cluster import app; app()"
        return subprocess.run(
            [sys.executable, "-c", code, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=300
        )

    up = cli("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
        assert "127.0.0.1:" in up.stdout  # the MinIO endpoint
        secret = json.loads((state / "minio" / "credentials.json").read_text())["secret_key"]
        assert secret not in up.stdout + up.stderr
        assert (state / "minio" / "credentials.json").stat().st_mode & 0o777 == 0o600

        procs = json.loads((state / "cluster.json").read_text())["processes"]
        assert len(procs) == 6
        st = cli("status")
        assert st.returncode == 0, st.stdout + st.stderr
        assert "running" in st.stdout
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [n for n, p in procs.items() if process.alive(p["pid"], p["start_time"])] == []
    assert cli("status").returncode == 1
