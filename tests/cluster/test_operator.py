"""The operator on a real API server: each kind end to end, at the Kubernetes level.

kwok plays the kubelet (pods become Running, Job pods Succeeded; nothing runs), so
a step's output is simulated by storing its version in MinIO with the store API,
as the step would, before kwok completes the Job. Failures are simulated by
cordoning the nodes (pods stay Pending) and setting a pod's status to Failed with
a termination message, as the kubelet would report a crashed container. The
operator runs as its ServiceAccount, so every request goes through its RBAC, and
every namespace enforces the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from recplane.operator.testing import Kubectl, OperatorEnvironment, OperatorProcess, publish, wait_for
from recplane.store import Store, open_store
from recplane.trainer import promotion

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "recplane-operator"
API = "recplane.io/v1alpha1"


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> OperatorEnvironment:
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
    kubectl = Kubectl(cluster.kubectl, cluster.kubeconfig, cluster.env())
    environment = OperatorEnvironment(kubectl, settings, tmp_path_factory.mktemp("operator"))
    environment.install(ROOT / "crds")
    return environment


@pytest.fixture(scope="module")
def store(env: OperatorEnvironment, monkeypatch_module: pytest.MonkeyPatch) -> Store:
    for key, value in env.store_settings.items():
        monkeypatch_module.setenv(key, value)
    return open_store()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


OPERATOR_ARGS = ("--standalone", "--restart-backoff=1", "--step-retries=0", "--poll=1")


@pytest.fixture(scope="module")
def operator(env: OperatorEnvironment) -> Iterator[OperatorProcess]:
    op = env.operator(*OPERATOR_ARGS).start()
    try:
        op.wait_healthy()
        yield op
    finally:
        op.stop()
    assert op.proc is not None and op.proc.returncode in (0, -15), op.tail()


@pytest.fixture
def ns(env: OperatorEnvironment, request: pytest.FixtureRequest) -> str:
    name = "op-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    return env.namespace(name)


# -------------------------------------------------------------------------------------------- helpers
def obj(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


SS_SPEC = {"source": {"format": "synthetic", "synthetic": {"events": 5000, "seed": 1}}}
FEATURE = {
    "name": "user_id",
    "group": "id",
    "type": "sparse",
    "columns": ["user_id"],
    "transform": {"type": "hash", "buckets": 100},
}
FS_SPEC = {"sampleSetRef": {"name": "events"}, "features": [FEATURE]}
TJ_SPEC = {
    "featureSetRef": {"name": "features"},
    "model": {"type": "fm"},
    "distributed": {"workers": 2, "procsPerWorker": 1},
}


def get(env: OperatorEnvironment, kind: str, ns: str, name: str) -> dict[str, Any]:
    return env.kubectl.json("get", kind, name, "-n", ns)  # type: ignore[no-any-return]


def cond(o: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (o.get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})


def wait_reason(
    env: OperatorEnvironment, kind: str, ns: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        o = get(env, kind, ns, name)
        return o if cond(o, "Ready").get("reason") == reason else None

    try:
        return wait_for(f"{kind} {ns}/{name} Ready reason {reason}", check, timeout)  # type: ignore[no-any-return]
    except TimeoutError:
        o = get(env, kind, ns, name)
        raise AssertionError(f"{kind} {name} never reached {reason}: {json.dumps(o.get('status'), indent=1)}") from None


def operator_reconciles(op: OperatorProcess) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("recplane_operator_reconciles_total"))


@contextlib.contextmanager
def namespace_operator(
    env: OperatorEnvironment, shared: OperatorProcess, ns: str, log_name: str
) -> Iterator[OperatorProcess]:
    """Swap the shared operator for one that serves `ns` only, so that what it does (its metrics)
    is about this test's resources and not those other tests left in back-off."""
    shared.stop()
    op = env.operator(*OPERATOR_ARGS, f"--namespace={ns}", log_name=log_name)
    try:
        op.start().wait_healthy()
        yield op
    finally:
        op.stop()
        shared.start().wait_healthy()


def children(env: OperatorEnvironment, kind: str, ns: str, selector: str) -> list[dict[str, Any]]:
    return env.kubectl.json("get", kind, "-n", ns, "-l", selector)["items"]  # type: ignore[no-any-return]


def events_for(env: OperatorEnvironment, ns: str, name: str) -> list[str]:
    items = env.kubectl.json("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")]


def event_messages(env: OperatorEnvironment, ns: str, name: str, reason: str) -> list[str]:
    items = env.kubectl.json(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name},reason={reason}"
    )["items"]
    return [e["message"] for e in items]


@contextlib.contextmanager
def nodes_cordoned(env: OperatorEnvironment) -> Iterator[None]:
    """New pods stay Pending: the test decides how they end (kwok would let them succeed at once)."""
    nodes = [n["metadata"]["name"] for n in env.kubectl.json("get", "nodes")["items"]]
    for n in nodes:
        env.kubectl("cordon", n)
    try:
        yield
    finally:
        for n in nodes:
            env.kubectl("uncordon", n)


def fail_pod(env: OperatorEnvironment, ns: str, pod: dict[str, Any], message: str, exit_code: int = 1) -> None:
    """Report the pod's container as crashed with `message`, as the kubelet does (FallbackToLogsOnError)."""
    container = pod["spec"]["containers"][0]
    status = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message}},
            }
        ],
    }
    env.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def pending_pods(env: OperatorEnvironment, ns: str, job: str, count: int = 1) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in children(env, "pods", ns, f"batch.kubernetes.io/job-name={job}")
            if p["status"].get("phase") == "Pending"
        ]
        return pods if len(pods) >= count else None

    return wait_for(f"{count} pending pod(s) of Job {job}", check, 30)  # type: ignore[no-any-return]


def ready_pipeline(
    env: OperatorEnvironment,
    store: Store,
    ns: str,
    models: tuple[str, ...] = ("m1",),
    tj_spec: dict[str, Any] = TJ_SPEC,
    timeout: float = 60,
) -> None:
    """A Ready SampleSet `events`, FeatureSet `features` and TrainJob `ranker` with the given model versions."""
    publish(store, ns, "sampleset", "events", "ss1", {"trainRows": 900})
    publish(store, ns, "featureset", "features", "fs1", {})
    for i, m in enumerate(models):
        publish(store, ns, "trainjob", "ranker", m, {"metrics": {"auc": 0.70 + i / 100}})
    env.kubectl.apply(
        [
            obj("SampleSet", "events", SS_SPEC),
            obj("FeatureSet", "features", FS_SPEC),
            obj("TrainJob", "ranker", tj_spec),
        ],
        "-n",
        ns,
    )
    wait_reason(env, "tj", ns, "ranker", "Succeeded", timeout=timeout)


# ---------------------------------------------------------------------------------------------- tests
def test_a_sampleset_runs_its_step_job_and_reports_the_stored_version(env, store, operator, ns) -> None:
    stored = publish(
        store, ns, "sampleset", "events", "v1", {"trainRows": 900, "validationRows": 100, "positiveRate": 0.12}
    )
    env.kubectl.apply(obj("SampleSet", "events", SS_SPEC), "-n", ns)
    ss = wait_reason(env, "ss", ns, "events", "Succeeded")
    st = ss["status"]
    assert (st["phase"], st["version"], st["artifactUri"]) == ("Ready", "v1", stored.uri)
    assert (st["trainRows"], st["validationRows"], st["positiveRate"]) == (900, 100, 0.12)
    assert st["observedGeneration"] == ss["metadata"]["generation"]
    assert cond(ss, "Ready")["status"] == "True" and cond(ss, "Failed")["status"] == "False"

    (job,) = children(env, "jobs", ns, "recplane.io/sampleset=events")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("SampleSet", ss["metadata"]["uid"], True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["step", "sampleset", "--spec", "/etc/recplane/spec.yaml"]
    configmap = get(env, "configmap", ns, job["metadata"]["name"])
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert "kind: SampleSet" in configmap["data"]["spec.yaml"]
    # The namespace enforces "restricted": the pod exists, so the API server admitted it.
    assert children(env, "pods", ns, f"batch.kubernetes.io/job-name={job['metadata']['name']}")
    # Events are posted right after the status they announce.
    wait_for("the Events", lambda: {"JobCreated", "Succeeded"} <= set(events_for(env, ns, "events")), 30)
    assert env.kubectl("get", "ss", "-n", ns).stdout.split("\n")[1].split()[1:4] == ["Ready", "True", "v1"]


def test_a_failed_step_reports_the_termination_message(env, operator, ns) -> None:
    with nodes_cordoned(env):
        env.kubectl.apply(
            obj("SampleSet", "broken", {"source": {"format": "csv", "uri": "s3://nowhere/events/"}}), "-n", ns
        )
        job = wait_for("the step Job", lambda: children(env, "jobs", ns, "recplane.io/sampleset=broken"), 30)[0]
        (pod,) = pending_pods(env, ns, job["metadata"]["name"])
        fail_pod(env, ns, pod, "StoreError: s3://nowhere/events/: bucket 'nowhere' does not exist")
        ss = wait_reason(env, "ss", ns, "broken", "StepFailed")
    assert ss["status"]["phase"] == "Failed"
    failed = cond(ss, "Failed")
    assert failed["status"] == "True"
    assert "exited with code 1" in failed["message"] and "bucket 'nowhere' does not exist" in failed["message"]
    wait_for(
        "a Warning Event",
        lambda: "Warning" in env.kubectl("get", "events", "-n", ns, "--field-selector", "reason=StepFailed").stdout,
        30,
    )


def test_a_featureset_waits_for_its_sampleset_and_follows_its_new_versions(env, store, operator, ns) -> None:
    env.kubectl.apply(obj("FeatureSet", "features", FS_SPEC), "-n", ns)
    fs = wait_reason(env, "fs", ns, "features", "ReferenceNotFound")
    assert "spec.sampleSetRef" in cond(fs, "Ready")["message"] and "'events'" in cond(fs, "Ready")["message"]
    assert not children(env, "jobs", ns, "recplane.io/featureset=features")

    publish(store, ns, "sampleset", "events", "v1", {})
    publish(store, ns, "featureset", "features", "f1", {"features": [{"name": "user_id", "cardinality": 97}]})
    env.kubectl.apply(obj("SampleSet", "events", SS_SPEC), "-n", ns)
    fs = wait_reason(env, "fs", ns, "features", "Succeeded")
    assert fs["status"]["version"] == "f1" and fs["status"]["sampleSetVersion"] == "v1"
    assert fs["status"]["features"] == [{"name": "user_id", "cardinality": 97}]
    (first,) = children(env, "jobs", ns, "recplane.io/featureset=features")
    assert "version: v1" in get(env, "configmap", ns, first["metadata"]["name"])["data"]["spec.yaml"]

    # A new SampleSet version flows downstream: the FeatureSet is computed again over it.
    publish(store, ns, "sampleset", "events", "v2", {})
    publish(store, ns, "featureset", "features", "f2", {})
    env.kubectl.apply(
        obj("SampleSet", "events", {**SS_SPEC, "source": {"format": "synthetic", "synthetic": {"seed": 2}}}), "-n", ns
    )
    wait_for("FeatureSet over v2", lambda: get(env, "fs", ns, "features")["status"].get("sampleSetVersion") == "v2", 60)
    jobs = children(env, "jobs", ns, "recplane.io/featureset=features")
    assert len(jobs) == 2
    second = next(j for j in jobs if j["metadata"]["name"] != first["metadata"]["name"])
    assert "version: v2" in get(env, "configmap", ns, second["metadata"]["name"])["data"]["spec.yaml"]
    assert wait_reason(env, "fs", ns, "features", "Succeeded")["status"]["version"] == "f2"


def test_a_followed_sampleset_looks_for_new_files_every_interval_and_new_versions_flow_downstream(
    env, store, operator, ns
) -> None:
    publish(store, ns, "sampleset", "events", "v1", {"trainRows": 900})
    publish(store, ns, "featureset", "features", "f1", {})
    source = {"format": "parquet", "uri": "s3://feed-logs/impressions/", "follow": True, "followInterval": "2s"}
    resources = [obj("SampleSet", "events", {"source": source}), obj("FeatureSet", "features", FS_SPEC)]
    env.kubectl.apply(resources, "-n", ns)
    ss = wait_reason(env, "ss", ns, "events", "Following", timeout=120)
    assert (ss["status"]["phase"], ss["status"]["version"], ss["status"]["versions"]) == ("Ready", "v1", ["v1"])
    assert "every 2s" in cond(ss, "Ready")["message"]
    wait_for(
        "the FeatureSet over v1",
        lambda: get(env, "fs", ns, "features")["status"].get("sampleSetVersion") == "v1",
        120,
    )

    def rounds() -> dict[int, dict[str, Any]]:
        jobs = children(env, "jobs", ns, "recplane.io/sampleset=events")
        return {int(j["metadata"]["labels"]["recplane.io/round"]): j for j in jobs}

    # Once a round's Job has finished, the next one starts by itself, followInterval later.
    wait_for("a second round", lambda: max(rounds(), default=-1) >= 1, 120)

    def unscheduled(job: dict[str, Any]) -> bool:
        pods = children(env, "pods", ns, f"batch.kubernetes.io/job-name={job['metadata']['name']}")
        return any(p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName") for p in pods)

    with nodes_cordoned(env):
        # A round whose pod cannot start yet: its step finds new files and stores v2 (as the step would).
        waiting_round = wait_for(
            "a round with a pod not yet scheduled",
            lambda: next((j for _, j in sorted(rounds().items(), reverse=True) if unscheduled(j)), None),
            120,
        )
        publish(store, ns, "sampleset", "events", "v2", {"trainRows": 120})
        publish(store, ns, "featureset", "features", "f2", {})
    # Uncordoned: kwok completes the round; its version shows in the status and flows downstream.

    def stored_v2() -> dict[str, Any] | None:
        st = get(env, "ss", ns, "events")["status"]
        return st if st.get("version") == "v2" else None

    st = wait_for("v2 in the SampleSet's status", stored_v2, 120)
    assert (st["versions"], st["trainRows"], st["phase"]) == (["v1", "v2"], 120, "Ready")
    assert int(waiting_round["metadata"]["labels"]["recplane.io/round"]) >= 1

    def features_over_v2() -> dict[str, Any] | None:
        fs = get(env, "fs", ns, "features")
        return fs if fs["status"].get("version") == "f2" else None

    fs = wait_for("the FeatureSet over v2", features_over_v2, 120)
    assert fs["status"]["sampleSetVersion"] == "v2"
    fs_jobs = children(env, "jobs", ns, "recplane.io/featureset=features")
    assert len(fs_jobs) == 2
    specs = [get(env, "configmap", ns, j["metadata"]["name"])["data"]["spec.yaml"] for j in fs_jobs]
    assert sorted("version: v2" in s for s in specs) == [False, True]
    wait_for("the new version announced", lambda: "VersionStored" in events_for(env, ns, "events"), 60)

    # Rounds that find nothing new change nothing: no status write, no Event, no FeatureSet Job.
    ss = get(env, "ss", ns, "events")
    events = sorted(events_for(env, ns, "events"))
    seen = max(rounds())
    wait_for("two more rounds", lambda: max(rounds()) >= seen + 2, 120)
    again = get(env, "ss", ns, "events")
    assert again["status"] == ss["status"]
    assert sorted(events_for(env, ns, "events")) == events
    assert len(children(env, "jobs", ns, "recplane.io/featureset=features")) == 2
    # Only a few finished rounds are kept: the one running, the last finished, and two more.
    assert len(rounds()) <= 4
    # Stop following: rounds every 2 s would keep the shared operator busy in later tests.
    env.kubectl("delete", "ss", "events", "-n", ns, "--wait=true", "--timeout=60s")


def test_a_trainjob_starts_its_workers_together_and_restarts_the_group_with_backoff(env, store, operator, ns) -> None:
    publish(store, ns, "sampleset", "events", "v1", {})
    publish(store, ns, "featureset", "features", "f1", {})
    env.kubectl.apply([obj("SampleSet", "events", SS_SPEC), obj("FeatureSet", "features", FS_SPEC)], "-n", ns)
    wait_reason(env, "fs", ns, "features", "Succeeded")
    spec = {
        **TJ_SPEC,
        "maxRestarts": 1,
        "resources": {"cpu": "2", "memory": "4Gi"},
        "scheduling": {"nodeSelector": {"type": "kwok"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    }
    with nodes_cordoned(env):
        env.kubectl.apply(obj("TrainJob", "ranker", spec), "-n", ns)
        job = wait_for(
            "attempt 0", lambda: children(env, "jobs", ns, "recplane.io/trainjob=ranker,recplane.io/attempt=0"), 30
        )[0]
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 2
        svc = get(env, "service", ns, "ranker-workers")
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
        pods = pending_pods(env, ns, job["metadata"]["name"], count=2)  # both workers at once
        pod = pods[0]["spec"]
        env_vars = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env_vars["MASTER_ADDR"] == f"{job['metadata']['name']}-0.ranker-workers.{ns}.svc"
        assert (env_vars["NNODES"], env_vars["WORLD_SIZE"]) == ("2", "2")
        assert pod["nodeSelector"] == {"type": "kwok"} and pod["tolerations"][0]["key"] == "gpu"
        assert pod["subdomain"] == "ranker-workers"
        assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
        indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
        assert indexes == ["0", "1"]

        fail_pod(env, ns, pods[1], "RuntimeError: NCCL timeout on rank 1")
        wait_for("a group restart", lambda: get(env, "tj", ns, "ranker")["status"].get("restarts") == 1, 30)
        wait_for(
            "the restart announced", lambda: {"RestartBackoff", "Restarting"} & set(events_for(env, ns, "ranker")), 30
        )
        retry = children(env, "jobs", ns, "recplane.io/trainjob=ranker,recplane.io/attempt=1")
        assert len(retry) == 1
        (first_again,) = children(env, "jobs", ns, "recplane.io/trainjob=ranker,recplane.io/attempt=0")
        assert first_again["status"].get("failed", 0) >= 1

        again = pending_pods(env, ns, retry[0]["metadata"]["name"], count=2)
        fail_pod(env, ns, again[0], "RuntimeError: NCCL timeout on rank 0")
        tj = wait_reason(env, "tj", ns, "ranker", "RestartLimitReached")
    assert tj["status"]["phase"] == "Failed" and tj["status"]["restarts"] == 1
    assert "NCCL timeout on rank 0" in cond(tj, "Failed")["message"]
    assert "spec.maxRestarts is 1" in cond(tj, "Failed")["message"]
    assert len(children(env, "jobs", ns, "recplane.io/trainjob=ranker")) == 2  # never a third group


def test_a_trainjob_reflects_the_model_versions_rank_0_stored(env, store, operator, ns) -> None:
    ready_pipeline(env, store, ns, models=("m1", "m2"))
    tj = get(env, "tj", ns, "ranker")
    st = tj["status"]
    assert (st["phase"], st["latestVersion"], st["promotedVersion"], st["restarts"]) == ("Succeeded", "m2", "m2", 0)
    assert st["metrics"] == {"auc": 0.71}
    assert [v["version"] for v in st["versions"]] == ["m1", "m2"]
    assert st["featureSetVersion"] == "fs1"
    assert env.kubectl("get", "tj", "-n", ns).stdout.split("\n")[1].split()[1:5] == ["Succeeded", "True", "fm", "m2"]
    # Without a promotion rule every version is promoted: the Succeeded Event names the version, and
    # there is no VersionPromoted Event per version beside it.
    wait_for("the Succeeded Event", lambda: event_messages(env, ns, "ranker", "Succeeded"), 30)
    assert event_messages(env, ns, "ranker", "Succeeded") == ["model version m2 stored"]
    assert event_messages(env, ns, "ranker", "VersionPromoted") == []


def test_a_modeldeployment_rolls_out_new_versions_canaries_and_rolls_back(env, store, operator, ns) -> None:
    ready_pipeline(env, store, ns)
    spec = {
        "model": {"trainJobRef": {"name": "ranker"}, "follow": "latest"},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
        "events": {"enabled": True},
    }
    env.kubectl.apply(obj("ModelDeployment", "ranker", spec), "-n", ns)
    md = wait_reason(env, "md", ns, "ranker", "Serving")
    assert (md["status"]["currentVersion"], md["status"]["readyReplicas"]) == ("m1", 2)
    assert md["status"]["endpoint"] == f"http://ranker.{ns}.svc:3000"
    # Where a SampleSet finds the impressions and feedback the pods write.
    assert md["status"]["eventsUri"] == f"s3://recplane-operator/{ns}/events/ranker/"
    dep = get(env, "deployment", ns, "ranker")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["serve", "--model", md["status"]["currentUri"]]
    assert {"name": "RECPLANE_EVENTS_URI", "value": f"{ns}/events/ranker"} in container["env"]
    hpa = get(env, "hpa", ns, "ranker")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert get(env, "service", ns, "ranker")["spec"]["ports"][0]["port"] == 3000

    # A new TrainJob version rolls out.
    publish(store, ns, "trainjob", "ranker", "m2", {"metrics": {"auc": 0.75}})
    env.kubectl("annotate", "tj", "ranker", "-n", ns, "example.com/retrained=1")
    wait_for("m2 served", lambda: get(env, "md", ns, "ranker")["status"].get("currentVersion") == "m2", 60)
    md = wait_reason(env, "md", ns, "ranker", "Serving")
    assert [h["version"] for h in md["status"]["history"]] == ["m1", "m2"]
    assert (
        get(env, "deployment", ns, "ranker")["spec"]["template"]["metadata"]["labels"]["recplane.io/model-version"]
        == "m2"
    )

    # A canary of m1 at 20%.
    env.kubectl(
        "patch",
        "md",
        "ranker",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"canary": {"version": "m1", "weight": 20}}}),
    )
    md = wait_for("the canary", lambda: get(env, "md", ns, "ranker")["status"].get("canaryVersion") == "m1", 30)
    canary = wait_for(
        "the canary Deployment", lambda: children(env, "deployments", ns, "recplane.io/track=canary"), 30
    )[0]
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["template"]["metadata"]["labels"]["recplane.io/model-version"] == "m1"
    env.kubectl("patch", "md", "ranker", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"canary": None}}))
    wait_for("the canary gone", lambda: not children(env, "deployments", ns, "recplane.io/track=canary"), 30)

    # `recplane rollback` pins the previous version again.
    from typer.testing import CliRunner

    from recplane.cli.main import app

    result = CliRunner().invoke(app, ["rollback", "md/ranker", "-n", ns, "--kubeconfig", str(env.kubectl.kubeconfig)])
    assert result.exit_code == 0, result.output
    wait_for("m1 served again", lambda: get(env, "md", ns, "ranker")["status"].get("currentVersion") == "m1", 60)
    md = wait_reason(env, "md", ns, "ranker", "Serving")
    assert [h["version"] for h in md["status"]["history"]] == ["m1", "m2", "m1"]
    assert md["status"]["history"][-1]["reason"] == "pinned"
    assert (
        get(env, "deployment", ns, "ranker")["spec"]["template"]["metadata"]["labels"]["recplane.io/model-version"]
        == "m1"
    )


def test_a_continuous_trainjob_announces_each_version_and_promoted_ones_roll_out_canary_first(
    env, store, operator, ns
) -> None:
    def judged(version: str, auc: float, promoted: bool, reason: str = "") -> None:
        """What a continuous TrainJob's rank 0 does: store the version, then record its verdict."""
        publish(store, ns, "trainjob", "ranker", version, {"metrics": {"auc": auc}})
        verdict = promotion.Verdict(version, promoted, reason, auc, None, None, "ss1", promotion.now())
        promotion.record(store, ns, "ranker", verdict)

    judged("m1", 0.74, True)
    tj_spec = {**TJ_SPEC, "continuous": {"interval": "1m"}, "promoteIf": {"maxAucDrop": 0.01}}
    ready_pipeline(env, store, ns, models=(), tj_spec=tj_spec, timeout=120)
    # Follows the promoted versions (the default); each new one is a canary at 25% for 15s first.
    md_spec = {"model": {"trainJobRef": {"name": "ranker"}}, "canary": {"weight": 25, "analysis": "15s"}}
    env.kubectl.apply(obj("ModelDeployment", "ranker", md_spec), "-n", ns)
    md = wait_reason(env, "md", ns, "ranker", "Serving", timeout=120)
    assert md["status"]["currentVersion"] == "m1" and "canaryVersion" not in md["status"]

    def train(version: str, auc: float, promoted: bool, reason: str = "") -> None:
        """Rank 0 stores a version and its verdict; kwok has completed the workers' Job, so an edit
        stands in for the poll that would find it while they run."""
        judged(version, auc, promoted, reason)
        env.kubectl("annotate", "--overwrite", "tj", "ranker", "-n", ns, f"example.com/round={version}")
        wait_for(
            f"{version} in the TrainJob's status",
            lambda: version in [v["version"] for v in get(env, "tj", ns, "ranker")["status"].get("versions", [])],
            120,
        )

    def history() -> list[dict[str, Any]]:
        return get(env, "md", ns, "ranker")["status"].get("history") or []  # type: ignore[no-any-return]

    # m2's AUC is more than promoteIf.maxAucDrop below m1's: rejected, recorded, not served.
    train("m2", 0.71, False, "AUC 0.71 drops more than promoteIf.maxAucDrop 0.01 below the promoted 0.74")
    wait_for("m2 recorded as rejected", lambda: "m2" in [h["version"] for h in history()], 120)
    md = get(env, "md", ns, "ranker")
    assert md["status"]["currentVersion"] == "m1" and "canaryVersion" not in md["status"]
    assert not children(env, "deployments", ns, "recplane.io/track=canary")

    # m3 is promoted: first the canary next to m1, then, after its analysis, the stable version.
    train("m3", 0.76, True)

    def canary_m3() -> dict[str, Any] | None:
        md = get(env, "md", ns, "ranker")
        return md if md["status"].get("canaryVersion") == "m3" else None

    md = wait_for("m3 as the canary", canary_m3, 120)
    assert md["status"]["currentVersion"] == "m1"
    labels = get(env, "deployment", ns, "ranker")["spec"]["template"]["metadata"]["labels"]
    assert labels["recplane.io/model-version"] == "m1"
    (canary,) = wait_for(
        "the canary Deployment", lambda: children(env, "deployments", ns, "recplane.io/track=canary"), 60
    )
    assert canary["spec"]["template"]["metadata"]["labels"]["recplane.io/model-version"] == "m3"
    wait_reason(env, "md", ns, "ranker", "CanaryAnalysis", timeout=120)
    wait_for("m3 stable", lambda: get(env, "md", ns, "ranker")["status"].get("currentVersion") == "m3", 180)
    wait_for("the canary gone", lambda: not children(env, "deployments", ns, "recplane.io/track=canary"), 60)
    md = wait_reason(env, "md", ns, "ranker", "Serving", timeout=120)
    assert "canaryVersion" not in md["status"]
    labels = get(env, "deployment", ns, "ranker")["spec"]["template"]["metadata"]["labels"]
    assert labels["recplane.io/model-version"] == "m3"

    m1, m2, m3 = md["status"]["history"]
    assert (m1["version"], m1["promoted"], m1["reason"]) == ("m1", True, "promoted: AUC 0.74 passes promoteIf")
    assert m1["startedAt"]
    assert (m2["version"], m2["promoted"]) == ("m2", False) and "startedAt" not in m2
    assert m2["reason"] == "rejected: AUC 0.71 drops more than promoteIf.maxAucDrop 0.01 below the promoted 0.74"
    assert (m3["version"], m3["promoted"]) == ("m3", True)
    assert m3["reason"] == "promoted: AUC 0.76 passes promoteIf; canary at 25% for 15s first"
    assert m3["canaryStartedAt"] < m3["startedAt"]
    # No Deployment revision ever ran the rejected version.
    served = {
        rs["metadata"]["labels"]["recplane.io/model-version"]
        for rs in children(env, "replicasets", ns, "recplane.io/modeldeployment=ranker")
    }
    assert served <= {"m1", "m3"} and "m1" in served

    # Each version announced once on the TrainJob, each canary step once on the deployment.
    def announced() -> dict[str, list[str]]:
        reasons = ("VersionPromoted", "VersionRejected", "CanaryStarted", "CanaryPromoted")
        return {r: event_messages(env, ns, "ranker", r) for r in reasons}

    expected = {"VersionPromoted": 2, "VersionRejected": 1, "CanaryStarted": 1, "CanaryPromoted": 1}
    wait_for("the Events", lambda: {r: len(m) for r, m in announced().items()} == expected, 30)
    # A restarted operator resumes (reconciles) everything: nothing is announced again.
    with namespace_operator(env, operator, ns, "restarted.log") as restarted:

        def resumed(kind: str, plural: str) -> bool:
            count = len(env.kubectl.json("get", plural, "-n", ns)["items"])
            done = sum(v for k, v in restarted.metrics().items() if "reconciles_total" in k and f'kind="{kind}"' in k)
            return done >= count

        wait_for("every TrainJob reconciled again", lambda: resumed("TrainJob", "tj"), 60)
        wait_for("every ModelDeployment reconciled again", lambda: resumed("ModelDeployment", "md"), 60)
    events = announced()
    assert {r: len(m) for r, m in events.items()} == expected
    assert sorted(events["VersionPromoted"]) == [
        "model version m1 (AUC 0.74) promoted",
        "model version m3 (AUC 0.76) promoted",
    ]
    assert events["VersionRejected"] == [
        "model version m2 (AUC 0.71) rejected: "
        "AUC 0.71 drops more than promoteIf.maxAucDrop 0.01 below the promoted 0.74"
    ]


def test_bad_input_ends_in_conditions_a_user_can_act_on_without_a_hot_loop(env, store, operator, ns) -> None:
    ready_pipeline(env, store, ns)
    sensitive = {
        **FEATURE,
        "name": "income",
        "type": "dense",
        "group": "reader",
        "transform": {"type": "log1p"},
        "sensitive": True,
        "allowedNamespaces": ["finance"],
    }
    cycle_a = {"source": {"format": "parquet", "uri": f"s3://{BUCKET}/{ns}/sampleset/loop-b/"}}
    cycle_b = {"source": {"format": "parquet", "uri": f"s3://{BUCKET}/{ns}/sampleset/loop-a/"}}
    env.kubectl.apply(
        [
            obj(
                "ModelDeployment", "no-such-version", {"model": {"trainJobRef": {"name": "ranker", "version": "v404"}}}
            ),
            obj("ModelDeployment", "no-such-trainjob", {"model": {"trainJobRef": {"name": "ghost"}}}),
            obj(
                "FeatureSet", "secret-features", {"sampleSetRef": {"name": "events"}, "features": [FEATURE, sensitive]}
            ),
            obj("SampleSet", "loop-a", cycle_a),
            obj("SampleSet", "loop-b", cycle_b),
            obj(
                "ModelDeployment",
                "bad-image",
                {"model": {"trainJobRef": {"name": "ranker"}, "follow": "latest"}, "image": "registry.invalid/nope:1"},
            ),
        ],
        "-n",
        ns,
    )
    md = wait_reason(env, "md", ns, "no-such-version", "VersionNotFound")
    assert "'v404'" in cond(md, "Ready")["message"] and "m1" in cond(md, "Ready")["message"]
    md = wait_reason(env, "md", ns, "no-such-trainjob", "ReferenceNotFound")
    assert "TrainJob 'ghost'" in cond(md, "Ready")["message"]
    fs = wait_reason(env, "fs", ns, "secret-features", "SensitiveFeatureForbidden")
    assert fs["status"]["phase"] == "Failed" and "'income'" in cond(fs, "Failed")["message"]
    assert not children(env, "jobs", ns, "recplane.io/featureset=secret-features")
    loop = wait_reason(env, "ss", ns, "loop-a", "ReferenceCycle")
    assert "SampleSet 'loop-a' -> SampleSet 'loop-b' -> SampleSet 'loop-a'" in cond(loop, "Ready")["message"]

    # An image that cannot be pulled: the kubelet would report ErrImagePull on the container.
    wait_for("the bad-image pod", lambda: children(env, "pods", ns, "recplane.io/modeldeployment=bad-image"), 30)
    (pod,) = children(env, "pods", ns, "recplane.io/modeldeployment=bad-image")
    status = {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
        "containerStatuses": [
            {
                "name": "serving",
                "image": "registry.invalid/nope:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "waiting": {"reason": "ErrImagePull", "message": "dial tcp: lookup registry.invalid: no such host"}
                },
            }
        ],
    }
    env.kubectl(
        "patch",
        "pod",
        pod["metadata"]["name"],
        "-n",
        ns,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps({"status": status}),
    )
    md = wait_reason(env, "md", ns, "bad-image", "ImagePullBackOff")
    assert "registry.invalid/nope:1" in cond(md, "Ready")["message"] and "spec.image" in cond(md, "Ready")["message"]

    # Waiting resources are retried with back-off, not in a hot loop, and the operator lives on.
    with namespace_operator(env, operator, ns, "stuck.log") as stuck:
        wait_for("the first reconciles", lambda: operator_reconciles(stuck) >= 6, 60)
        time.sleep(3)
        before = operator_reconciles(stuck)
        time.sleep(6)
        after = operator_reconciles(stuck)
        assert after - before <= 12, f"{after - before} reconciles in 6s for a few stuck resources"
        assert stuck.alive()


def test_a_missing_store_secret_is_reported_before_any_pod_starts(env, operator) -> None:
    ns = env.namespace("op-no-secret", secret=False)
    env.kubectl.apply(obj("SampleSet", "events", SS_SPEC), "-n", ns)
    ss = wait_reason(env, "ss", ns, "events", "StoreSecretMissing")
    assert "recplane-store" in cond(ss, "Ready")["message"] and "RECPLANE_STORE" in cond(ss, "Ready")["message"]
    assert not children(env, "jobs", ns, "recplane.io/sampleset=events")


def test_reconciling_again_changes_nothing(env, store, operator, ns) -> None:
    ready_pipeline(env, store, ns)
    env.kubectl.apply(
        obj("ModelDeployment", "ranker", {"model": {"trainJobRef": {"name": "ranker"}, "follow": "latest"}}), "-n", ns
    )
    wait_reason(env, "md", ns, "ranker", "Serving")
    time.sleep(2)  # let the last child events settle

    def snapshot() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("ss", "fs", "tj", "md"):
            for item in env.kubectl.json("get", kind, "-n", ns)["items"]:
                out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        # Children's status is written by their controllers; what the operator wrote is its managed fields.
        for kind in ("jobs", "deployments", "services", "hpa", "configmaps"):
            for item in env.kubectl.json("get", kind, "-n", ns, "--show-managed-fields")["items"]:
                ours = [m for m in item["metadata"].get("managedFields", []) if m["manager"].startswith("recplane")]
                out[f"{kind}/{item['metadata']['name']}"] = (item["metadata"].get("generation"), ours)
        return out

    before = snapshot()
    # A restarted operator resumes every resource: a full reconcile of each, from scratch. It serves this
    # namespace only, so that its count of reconciles is about these four resources.
    with namespace_operator(env, operator, ns, "again.log") as again:
        wait_for("every resource reconciled", lambda: operator_reconciles(again) >= 4, 30)
        time.sleep(2)
        assert snapshot() == before


def test_deletion_removes_children_and_stored_versions_only_when_asked(env, store, operator, ns) -> None:
    publish(store, ns, "sampleset", "keep", "v1", {})
    publish(store, ns, "sampleset", "drop", "v1", {})
    env.kubectl.apply(
        [obj("SampleSet", "keep", SS_SPEC), obj("SampleSet", "drop", {**SS_SPEC, "deletionPolicy": "Delete"})], "-n", ns
    )
    wait_reason(env, "ss", ns, "keep", "Succeeded")
    drop = wait_reason(env, "ss", ns, "drop", "Succeeded")
    assert drop["metadata"]["finalizers"] == ["recplane.io/finalizer"]
    assert "finalizers" not in get(env, "ss", ns, "keep")["metadata"]
    env.kubectl("delete", "ss", "keep", "drop", "-n", ns, "--wait=true", "--timeout=60s")
    assert store.latest(ns, "sampleset", "drop") is None
    assert store.latest(ns, "sampleset", "keep") is not None
    wait_for(
        "the Jobs garbage-collected", lambda: not children(env, "jobs", ns, "app.kubernetes.io/managed-by=recplane"), 60
    )
    wait_for(
        "the ConfigMaps garbage-collected",
        lambda: not children(env, "configmaps", ns, "app.kubernetes.io/managed-by=recplane"),
        60,
    )


def test_the_restricted_namespace_refuses_pods_that_break_the_standard(env, ns) -> None:
    # The control for the checks above: this namespace does enforce "restricted".
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    result = env.kubectl("apply", "-f", "-", input=pod, check=False)
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr
