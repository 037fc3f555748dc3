"""Benchmark: the operator under a burst of 200 TrainJobs and 200 ModelDeployments.

    .venv/bin/python bench/bench_operator.py [--count 200] [--state-dir DIR]

On the Docker-free test cluster (real API server, controller-manager and
scheduler, kwok nodes, MinIO): a fresh one in a temporary directory, or the one
`recplane dev-cluster up` runs when --state-dir names it. The operator runs as a
subprocess with its ServiceAccount (so RBAC is in the loop) and its default
settings. Every TrainJob trains over one Ready FeatureSet and finds its model
version in the store (kwok completes the workers at once); every
ModelDeployment serves the version of one Ready TrainJob.

Prints:
* time from the create request until every child exists (TrainJob: its Job, one
  worker needing no Service; ModelDeployment: Deployment + Service +
  HorizontalPodAutoscaler), and
  until every resource is Succeeded / Serving;
* p50 / p99 reconcile latency, from the operator's own histogram;
* API requests per reconcile, from the operator's own counter (its reconcilers),
  and all requests on recplane resources (kopf's included) from the API server;
* the operator's peak RSS (VmHWM).
Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from minio import Minio

from recplane.devcluster import DevCluster, ensure_binaries
from recplane.operator.kube import Kube, api_client
from recplane.operator.testing import Kubectl, OperatorEnvironment, OperatorProcess, publish, wait_for
from recplane.store import open_store

ROOT = Path(__file__).resolve().parents[1]
NS = f"bench-{os.getpid()}"  # fresh on every run, also on a reused cluster
BUCKET = "recplane-bench"
API = "recplane.io/v1alpha1"
CREATORS = 16
GOALS = "goal: all reconciled within 60 s, p99 under 2 s, peak RSS under 250 MB"


def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


FEATURE = {"name": "u", "group": "id", "type": "sparse", "columns": ["u"], "transform": {"type": "hash", "buckets": 10}}
SS = resource("SampleSet", "events", {"source": {"format": "synthetic"}})
FS = resource("FeatureSet", "features", {"sampleSetRef": {"name": "events"}, "features": [FEATURE]})


# Small requests: 3 kwok nodes of 32 CPUs must hold 200 serving pods.
TINY = {"cpu": "10m", "memory": "16Mi"}


def trainjob(name: str) -> dict[str, Any]:
    return resource(
        "TrainJob", name, {"featureSetRef": {"name": "features"}, "model": {"type": "lr"}, "resources": TINY}
    )


def deployment(name: str) -> dict[str, Any]:
    model = {"trainJobRef": {"name": "base"}, "follow": "latest"}
    return resource("ModelDeployment", name, {"model": model, "resources": TINY})


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def label(key: str, name: str) -> str:
    return key.split(f'{name}="', 1)[1].split('"', 1)[0]


def histogram_by(samples: dict[str, float], name: str) -> dict[str, dict[float, float]]:
    """Cumulative histogram buckets {label value: {upper bound: count}} from `..._bucket` samples."""
    out: dict[str, dict[float, float]] = {}
    for key, value in samples.items():
        bound = label(key, "le")
        le = math.inf if bound == "+Inf" else float(bound)
        series = out.setdefault(label(key, name), {})
        series[le] = series.get(le, 0.0) + value
    return out


def merged(histograms: Iterable[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for series in histograms:
        for le, count in series.items():
            out[le] = out.get(le, 0.0) + count
    return out


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix)}


def apiserver_requests(kubectl: Kubectl) -> dict[str, float]:
    """Requests the API server answered, by verb and resource (every client)."""
    text = kubectl("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",") if "=" in part
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = f"{labels.get('verb')} {labels.get('group') or 'core'}/{resource}"
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def cpu_by_component(cluster: DevCluster, op: OperatorProcess) -> dict[str, float]:
    out = {p.name: cpu_seconds(p.pid) for p in cluster.status().processes if p.alive}
    out["operator"] = cpu_seconds(op.pid)
    return out


def count_children(kubectl: Kubectl) -> dict[str, int]:
    out = {}
    for kind in ("jobs", "services", "deployments", "hpa"):
        items = kubectl.json("get", kind, "-n", NS, "-l", "app.kubernetes.io/managed-by=recplane")["items"]
        out[kind] = len(items)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="TrainJobs, and as many ModelDeployments")
    parser.add_argument("--state-dir", type=Path, help="a running `recplane dev-cluster` (default: start a fresh one)")
    parser.add_argument("--workers", type=int, default=None, help="operator --workers (default: its own default)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    cluster = DevCluster(args.state_dir or workdir / "cluster", binaries=ensure_binaries())
    own_cluster = args.state_dir is None
    if own_cluster:
        print("starting a dev cluster...", file=sys.stderr)
        cluster.start()
    op: OperatorProcess | None = None
    try:
        minio = Minio(cluster.minio_endpoint, cluster.minio_access_key, cluster.minio_secret_key, secure=False)
        if not minio.bucket_exists(BUCKET):
            minio.make_bucket(BUCKET)
        settings = {
            "RECPLANE_STORE": f"s3://{BUCKET}",
            "RECPLANE_S3_ENDPOINT": cluster.minio_endpoint,
            "RECPLANE_S3_ACCESS_KEY": cluster.minio_access_key,
            "RECPLANE_S3_SECRET_KEY": cluster.minio_secret_key,
            "RECPLANE_S3_SECURE": "false",
        }
        os.environ.update(settings)
        kubectl = Kubectl(cluster.kubectl, cluster.kubeconfig, cluster.env())
        env = OperatorEnvironment(kubectl, settings, workdir)
        env.install(ROOT / "crds")
        env.namespace(NS)
        store = open_store()
        publish(store, NS, "sampleset", "events", "ss1", {"trainRows": 1000})
        publish(store, NS, "featureset", "features", "fs1", {})
        names = [f"tj-{i:03d}" for i in range(args.count)]
        for name in ["base", *names]:
            publish(store, NS, "trainjob", name, "m1", {"metrics": {"auc": 0.7}})

        extra = [f"--workers={args.workers}"] if args.workers else []
        op = env.operator("--standalone", "--log-format=json", *extra, log_name="bench-operator.log").start()
        op.wait_healthy()
        kubectl.apply([SS, FS, trainjob("base")], "-n", NS)
        wait_for(
            "the base TrainJob",
            lambda: (kubectl.json("get", "tj", "base", "-n", NS).get("status") or {}).get("phase") == "Succeeded",
            120,
        )
        time.sleep(2)
        before_children = count_children(kubectl)
        metrics_before = op.metrics()
        api_before = apiserver_requests(kubectl)
        cpu_before = cpu_by_component(cluster, op)

        burst = [trainjob(n) for n in names] + [deployment(f"md-{i:03d}") for i in range(args.count)]
        client = Kube(api_client(str(cluster.kubeconfig), pool_size=CREATORS))
        started = time.monotonic()
        # At once: as a GitOps sync or a Helm release with many objects would create them.
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(client.create, burst))
        applied = time.monotonic() - started
        want = {
            "jobs": before_children["jobs"] + args.count,
            "services": before_children["services"] + args.count,  # the deployments' (one worker: no Service)
            "deployments": before_children["deployments"] + args.count,
            "hpa": before_children["hpa"] + args.count,
        }
        wait_for("every child", lambda: count_children(kubectl) == want, timeout=600, interval=0.5)
        children_at = time.monotonic() - started

        def unfinished() -> int:
            items = kubectl.json("get", "tj,md", "-n", NS)["items"]
            done = {"TrainJob": "Succeeded", "ModelDeployment": "Ready"}
            return sum(1 for o in items if (o.get("status") or {}).get("phase") != done[o["kind"]])

        wait_for("every resource Succeeded/Serving", lambda: unfinished() == 0, timeout=600, interval=0.5)
        ready_at = time.monotonic() - started
        time.sleep(3)  # the last events settle

        metrics_after = op.metrics()
        api_after = apiserver_requests(kubectl)
        cpu_after = cpu_by_component(cluster, op)
        served = {k: int(v - api_before.get(k, 0.0)) for k, v in api_after.items() if v > api_before.get(k, 0.0)}
        triggers = delta(metrics_after, metrics_before, "recplane_operator_triggers_total")
        by_source: dict[str, float] = {}
        for key, value in triggers.items():
            source = key.split('source="', 1)[1].split('"', 1)[0]
            by_source[source] = by_source.get(source, 0.0) + value
        reconciles = sum(delta(metrics_after, metrics_before, "recplane_operator_reconciles_total").values())
        requests = sum(delta(metrics_after, metrics_before, "recplane_operator_api_requests_total").values())
        reconcile_buckets = histogram_by(
            delta(metrics_after, metrics_before, "recplane_operator_reconcile_duration_seconds_bucket"), "kind"
        )
        pairs = list(merged(reconcile_buckets.values()).items())
        api_buckets = merged(
            histogram_by(
                delta(metrics_after, metrics_before, "recplane_operator_api_request_duration_seconds_bucket"), "verb"
            ).values()
        )
        by_kind: dict[str, float] = {}
        for key, value in delta(metrics_after, metrics_before, "recplane_operator_reconciles_total").items():
            kind = key.split('kind="', 1)[1].split('"', 1)[0]
            by_kind[kind] = by_kind.get(kind, 0.0) + value
        results = {
            "resources": 2 * args.count,
            "apply_seconds": round(applied, 2),
            "all_children_seconds": round(children_at, 1),
            "all_ready_seconds": round(ready_at, 1),
            "reconciles": int(reconciles),
            "reconciles_by_kind": {k: int(v) for k, v in sorted(by_kind.items())},
            "triggers_by_source": {k: int(v) for k, v in sorted(by_source.items())},
            "reconcile_p50_seconds": round(histogram_quantile(0.5, pairs), 3),
            "reconcile_p99_seconds": round(histogram_quantile(0.99, pairs), 3),
            "reconcile_p50_p99_seconds_by_kind": {
                kind: [round(histogram_quantile(q, list(b.items())), 3) for q in (0.5, 0.99)]
                for kind, b in sorted(reconcile_buckets.items())
                if sum(b.values())
            },
            "api_requests_per_reconcile": round(requests / max(reconciles, 1), 2),
            "api_request_p50_seconds": round(histogram_quantile(0.5, list(api_buckets.items())), 3),
            "api_request_p99_seconds": round(histogram_quantile(0.99, list(api_buckets.items())), 3),
            "recplane_io_requests_per_resource_all_clients": round(
                sum(v for k, v in served.items() if " recplane.io/" in k) / (2 * args.count), 2
            ),
            "apiserver_top_requests_during_burst": dict(sorted(served.items(), key=lambda kv: -kv[1])[:15]),
            "operator_peak_rss_mib": round(peak_rss_mib(op.pid), 1),
            "cpu_seconds_during_burst": {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_after.items()},
            "cpus": os.cpu_count(),
        }
        print(json.dumps(results, indent=2))
        print(GOALS, file=sys.stderr)
    except BaseException:
        print(f"kept {workdir} (operator log: {workdir / 'bench-operator.log'})", file=sys.stderr)
        raise
    finally:
        if op is not None:
            op.stop()
        if own_cluster:
            cluster.stop()  # reads its pids from the state directory: before that is removed
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
