"""TrainJob: a headless Service for rendezvous and, per attempt, an Indexed Job of N workers.

Each worker runs `torchrun` over `recplane step train`. Rendezvous is static:
worker 0 of the attempt is the master, reached through the headless Service
(`<job>-0.<service>.<namespace>.svc`); the node rank is the pod's completion
index. A single worker meets its processes on 127.0.0.1 and gets no Service: one
object less to create, and no endpoints for the cluster to keep. Gang semantics:
all N pods are created together (parallelism = completions = N) and the Job has
no retries of its own (backoffLimit 0), so one failed worker fails the attempt and
the operator restarts the whole group as the next attempt, which resumes from the
run's last checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recplane.operator import names
from recplane.operator.builders import common
from recplane.operator.builders.steps import pinned_spec, run_key
from recplane.operator.config import OperatorConfig

Obj = dict[str, Any]

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# Spec fields that do not change what is trained: editing them does not start a new run.
NOT_IN_RUN_KEY = ("deletionPolicy", "maxRestarts")


@dataclass(frozen=True)
class TrainingRun:
    key: str
    attempt: int
    job: Obj
    configmap: Obj
    """Owned by the Job once it exists (the controller adds that owner reference)."""

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])


def service_name(name: str) -> str:
    return names.dns_name(name, "workers")


def job_name(name: str, uid: str | None, key: str, attempt: int) -> str:
    """`<name>-<hash of run and uid>-<attempt>`: the uid keeps a re-created TrainJob from meeting the
    Jobs of its predecessor while those are still being deleted."""
    return names.dns_name(name, names.short_hash(key, uid), str(attempt), max_len=names.JOB_NAME_MAX)


def training_key(resource: Mapping[str, Any], feature_set_version: str | None) -> str:
    spec = pinned_spec("TrainJob", resource.get("spec") or {}, feature_set_version)
    return run_key("TrainJob", spec, ignore=NOT_IN_RUN_KEY)


def worker_count(resource: Mapping[str, Any]) -> int:
    return int(((resource.get("spec") or {}).get("distributed") or {}).get("workers", 1))


def build_workers_service(resource: Mapping[str, Any], config: OperatorConfig) -> Obj:
    """Headless Service giving each worker a stable DNS name; lists pods before they are ready
    because rendezvous happens before readiness."""
    meta = resource["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    selector = {**names.selector_labels("TrainJob", name), names.ROLE_LABEL: "worker"}
    svc: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(service_name(name), namespace, names.labels("TrainJob", name, "trainer")),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"name": "rendezvous", "port": config.master_port, "targetPort": config.master_port}],
        },
    }
    common.adopt([svc], resource)
    return svc


def build_training(
    resource: Mapping[str, Any], config: OperatorConfig, feature_set_version: str | None, attempt: int
) -> TrainingRun:
    """The Indexed Job of one attempt (0 = first start, k = k-th group restart) and its spec ConfigMap."""
    meta = resource["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    spec = pinned_spec("TrainJob", resource.get("spec") or {}, feature_set_version)
    key = run_key("TrainJob", spec, ignore=NOT_IN_RUN_KEY)
    dist = spec.get("distributed") or {}
    workers = worker_count(resource)
    procs = int(dist.get("procsPerWorker", 2))
    jname = job_name(name, meta.get("uid"), key, attempt)
    svc = service_name(name)
    labels = names.labels(
        "TrainJob",
        name,
        "trainer",
        {names.RUN_LABEL: key, names.ATTEMPT_LABEL: str(attempt), names.ROLE_LABEL: "worker", **config.extra_labels},
    )
    owner = names.owner_key("TrainJob", name)
    master = f"{jname}-0.{svc}.{namespace}.svc" if workers > 1 else "127.0.0.1"

    env: list[Obj] = [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(config.master_port)},
        {"name": "NNODES", "value": str(workers)},
        {"name": "NPROC_PER_NODE", "value": str(procs)},
        {"name": "WORLD_SIZE", "value": str(workers * procs)},
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
        # Same run across attempts: the trainer resumes from this run's last checkpoint.
        {"name": "RECPLANE_RUN", "value": key},
        {"name": "RECPLANE_ATTEMPT", "value": str(attempt)},
    ]
    # $(VAR) is expanded by the kubelet from the container's environment.
    args = [
        "--nnodes=$(NNODES)",
        "--nproc-per-node=$(NPROC_PER_NODE)",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        # Restarts are the operator's (the whole group, from a checkpoint), not torchrun's.
        "--max-restarts=0",
        "--no-python",
        "recplane",
        "step",
        "train",
        "--spec",
        f"{names.SPEC_DIR}/{names.SPEC_FILE}",
    ]
    trainer = common.container(
        "trainer",
        spec.get("image") or config.trainer_image,
        ["torchrun"],
        args,
        env=env,
        mounts=[
            {"name": "spec", "mountPath": names.SPEC_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        config=config,
        spec=spec,
        ports=[{"name": "rendezvous", "containerPort": config.master_port}],
    )
    pod = common.pod_spec(
        [trainer],
        # torch's DataLoader workers and gloo share tensors through /dev/shm.
        [common.spec_volume(jname), common.scratch_volume("dshm", memory=True)],
        "Never",
        **({"subdomain": svc} if workers > 1 else {}),
        **common.scheduling(spec),
    )
    job: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": common.metadata(jname, namespace, labels, owner),
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {names.OWNER_ANNOTATION: owner}},
                "spec": pod,
            },
        },
    }
    common.adopt([job], resource)
    configmap = common.spec_configmap(jname, namespace, labels, common.spec_document(resource, spec))
    return TrainingRun(key=key, attempt=attempt, job=job, configmap=configmap)
