"""Every object the operator creates, checked without a cluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from recplane.api.resource import load_resource
from recplane.operator import names
from recplane.operator.builders import ModelRef, build_serving, build_step, build_training, build_workers_service
from recplane.operator.config import STORE_ENV_KEYS, OperatorConfig

CONFIG = OperatorConfig(trainer_image="example/trainer:1", serving_image="example/serving:1")


def pod_specs(make: Any) -> dict[str, dict[str, Any]]:
    ss = make("SampleSet", "events")
    fs = make("FeatureSet", "features")
    tj = make("TrainJob", "ranker")
    md = make(
        "ModelDeployment",
        "ranker",
        spec={"model": {"uri": "s3://b/team-a/trainjob/x/v2/"}, "canary": {"version": "v3", "weight": 10}},
    )
    serving = build_serving(md, CONFIG, ModelRef("v2", "s3://b/v2/"), ModelRef("v3", "s3://b/v3/"), 10)
    deps = [o for o in serving.apply if o["kind"] == "Deployment"]
    return {
        "sampleset": build_step(ss, CONFIG).job["spec"]["template"]["spec"],
        "featureset": build_step(fs, CONFIG, "ssv1").job["spec"]["template"]["spec"],
        "trainjob": build_training(tj, CONFIG, "fsv1", 0).job["spec"]["template"]["spec"],
        "serving-stable": deps[0]["spec"]["template"]["spec"],
        "serving-canary": deps[1]["spec"]["template"]["spec"],
    }


def test_every_pod_the_operator_creates_passes_the_restricted_pod_security_standard(make, restricted) -> None:
    for what, pod in pod_specs(make).items():
        assert restricted(pod) == [], what
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, what
            assert c["terminationMessagePolicy"] == "FallbackToLogsOnError", what
            # The read-only root file system leaves /tmp (an emptyDir) as the place to write.
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], what
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"], what
        assert pod["automountServiceAccountToken"] is False, what


def test_store_settings_reach_pods_only_through_the_store_secret(make) -> None:
    for what, pod in pod_specs(make).items():
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        for key in STORE_ENV_KEYS:
            assert "value" not in env[key], f"{what}: {key} written in plain text"
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == CONFIG.store_secret and ref["key"] == key
        assert env["RECPLANE_STORE"]["valueFrom"]["secretKeyRef"].get("optional") is None
        assert env["RECPLANE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_children_carry_owner_references_and_labels(make) -> None:
    tj = make("TrainJob", "ranker")
    run = build_training(tj, CONFIG, "fsv1", 0)
    svc = build_workers_service(tj, CONFIG)
    for obj in (run.job, svc):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "recplane.io/v1alpha1",
            "kind": "TrainJob",
            "name": "ranker",
            "uid": tj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["labels"][names.MANAGED_BY] == "recplane"
        assert obj["metadata"]["labels"]["recplane.io/trainjob"] == "ranker"
        assert obj["metadata"]["namespace"] == "team-a"
    template_labels = run.job["spec"]["template"]["metadata"]["labels"]
    assert template_labels["recplane.io/trainjob"] == "ranker"
    assert run.job["spec"]["template"]["metadata"]["annotations"][names.OWNER_ANNOTATION] == "TrainJob/ranker"


def test_a_step_runs_recplane_step_over_the_mounted_spec(make, tmp_path: Path) -> None:
    fs = make("FeatureSet", "features")
    run = build_step(fs, CONFIG, upstream_version="ss-v7")
    container = run.job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example/trainer:1"
    assert [*container["command"], *container["args"]] == [
        "recplane", "step", "featureset", "--spec", "/etc/recplane/spec.yaml",
    ]  # fmt: skip
    assert {"name": "spec", "mountPath": "/etc/recplane", "readOnly": True} in container["volumeMounts"]
    volume = next(v for v in run.job["spec"]["template"]["spec"]["volumes"] if v["name"] == "spec")
    assert volume["configMap"]["name"] == run.configmap["metadata"]["name"] == run.name
    # The mounted file is what the step loads, pinned to the SampleSet version this run consumes.
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(run.configmap["data"]["spec.yaml"])
    loaded = load_resource(spec_file, "featureset")
    assert (loaded.name, loaded.namespace) == ("features", "team-a")
    assert loaded.spec.sample_set_ref.version == "ss-v7"  # type: ignore[attr-defined]
    assert run.job["spec"]["backoffLimit"] == CONFIG.step_retries


def test_a_step_job_is_named_by_its_input(make) -> None:
    ss = make("SampleSet", "events")
    same = build_step(copy.deepcopy(ss), CONFIG)
    assert build_step(ss, CONFIG).name == same.name  # same input: same Job, never a duplicate
    changed = copy.deepcopy(ss)
    changed["spec"]["source"]["synthetic"]["events"] = 9000
    assert build_step(changed, CONFIG).name != same.name
    retention = copy.deepcopy(ss)
    retention["spec"]["deletionPolicy"] = "Delete"
    assert build_step(retention, CONFIG).name == same.name  # deletionPolicy does not change the output
    # A deleted and re-created resource never picks up its predecessor's Job.
    recreated = make("SampleSet", "events")
    assert build_step(recreated, CONFIG).key == same.key and build_step(recreated, CONFIG).name != same.name
    fs = make("FeatureSet", "features")
    assert build_step(fs, CONFIG, "v1").name != build_step(fs, CONFIG, "v2").name


def test_long_names_are_cut_to_valid_unique_kubernetes_names(make) -> None:
    long_a = "a" * 70 + "-one"
    long_b = "a" * 70 + "-two"
    jobs = [build_training(make("TrainJob", n), CONFIG, "fs", 12).job for n in (long_a, long_b)]
    job_names = [j["metadata"]["name"] for j in jobs]
    assert job_names[0] != job_names[1]
    for job in jobs:
        # Indexed Job pods are reachable as <job>-<index>: that must stay a DNS label.
        assert len(job["metadata"]["name"]) + len("-1023") <= 63
        for value in job["metadata"]["labels"].values():
            assert len(value) <= 63


def test_workers_get_torchrun_rendezvous_through_the_headless_service(make) -> None:
    tj = make("TrainJob", "ranker")
    run = build_training(tj, CONFIG, "fsv1", 2)
    svc = build_workers_service(tj, CONFIG)
    job = run.job
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3  # all workers start together
    assert job["spec"]["backoffLimit"] == 0  # one failed worker fails the group; the operator restarts it
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{run.name}-0.{svc['metadata']['name']}.team-a.svc"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["NNODES"]["value"] == "3"
    assert env["NPROC_PER_NODE"]["value"] == "2"
    assert env["WORLD_SIZE"]["value"] == "6"
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env["RECPLANE_ATTEMPT"]["value"] == "2"
    container = pod["containers"][0]
    assert container["command"] == ["torchrun"]
    args = container["args"]
    assert "--node-rank=$(NODE_RANK)" in args and "--master-addr=$(MASTER_ADDR)" in args
    assert args[args.index("--no-python") + 1 :] == ["recplane", "step", "train", "--spec", "/etc/recplane/spec.yaml"]


def test_a_single_worker_meets_its_processes_on_localhost_without_a_service(make) -> None:
    spec = {**make("TrainJob", "solo")["spec"], "distributed": {"workers": 1, "procsPerWorker": 4}}
    tj = make("TrainJob", "solo", spec=spec)
    pod = build_training(tj, CONFIG, "fsv1", 0).job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == "127.0.0.1" and (env["NNODES"], env["WORLD_SIZE"]) == ("1", "4")
    assert "subdomain" not in pod


def test_attempts_of_one_run_share_the_run_key_and_differ_by_name(make) -> None:
    tj = make("TrainJob", "ranker")
    first, second = build_training(tj, CONFIG, "fs", 0), build_training(tj, CONFIG, "fs", 1)
    assert first.key == second.key and first.name != second.name
    more_restarts = copy.deepcopy(tj)
    more_restarts["spec"]["maxRestarts"] = 9
    assert build_training(more_restarts, CONFIG, "fs", 0).name == first.name
    assert build_training(tj, CONFIG, "fs-new", 0).key != first.key


def test_resources_and_scheduling_pass_through_to_the_workers(make) -> None:
    spec = {
        "featureSetRef": {"name": "features"},
        "model": {"type": "dcn_v2"},
        "distributed": {"workers": 2, "backend": "nccl"},
        "resources": {"cpu": "8", "memory": "32Gi", "gpu": 2},
        "scheduling": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "training",
        },
        "image": "example/trainer:custom",
    }
    pod = build_training(make("TrainJob", "big", spec=spec), CONFIG, "fs", 0).job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "training"
    container = pod["containers"][0]
    assert container["image"] == "example/trainer:custom"
    amounts = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}


def test_serving_runs_the_chosen_version_behind_a_service_and_an_autoscaler(make) -> None:
    md = make(
        "ModelDeployment",
        "ranker",
        spec={
            "model": {"trainJobRef": {"name": "tj"}},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCpuUtilization": 55},
            "scheduling": {"nodeSelector": {"pool": "serving"}},
        },
    )
    plan = build_serving(md, CONFIG, ModelRef("v2", "s3://bucket/team-a/trainjob/tj/v2/"))
    by_kind = {o["kind"]: o for o in plan.apply}
    assert set(by_kind) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    dep = by_kind["Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert [*container["command"], *container["args"]] == [
        "recplane", "serve", "--model", "s3://bucket/team-a/trainjob/tj/v2/", "--port", "3000",
    ]  # fmt: skip
    assert "replicas" not in dep["spec"]  # the autoscaler owns the replica count
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["template"]["metadata"]["labels"][names.MODEL_VERSION_LABEL] == "v2"
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "serving"}
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    svc = by_kind["Service"]["spec"]
    assert svc["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert plan.delete == [("apps/v1", "Deployment", "ranker-canary")]


def test_serving_pods_write_their_event_log_under_the_deployment_when_enabled(make) -> None:
    def env(spec: dict[str, Any]) -> dict[str, str]:
        md = make("ModelDeployment", "ranker", spec={"model": {"trainJobRef": {"name": "tj"}}, **spec})
        dep = next(o for o in build_serving(md, CONFIG, ModelRef("v2", "u2")).apply if o["kind"] == "Deployment")
        return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert not any(k.startswith("RECPLANE_EVENTS_") for k in env({}))
    on = env({"events": {"enabled": True, "flushSeconds": 30, "topK": 10}})
    assert on["RECPLANE_EVENTS_URI"] == "team-a/events/ranker"  # inside the store the pod already writes to
    assert (on["RECPLANE_EVENTS_FLUSH_SECONDS"], on["RECPLANE_EVENTS_TOP_K"]) == ("30", "10")
    assert on["RECPLANE_EVENTS_LABEL_WINDOW_SECONDS"] == "1800"
    assert "RECPLANE_STORE" in on


@pytest.mark.parametrize(("weight", "replicas"), [(10, 1), (50, 4), (20, 1), (75, 12)])
def test_a_canary_gets_about_its_weight_of_the_pods(make, weight: int, replicas: int) -> None:
    md = make(
        "ModelDeployment",
        "ranker",
        spec={
            "model": {"trainJobRef": {"name": "tj"}},
            "autoscaling": {"minReplicas": 4, "maxReplicas": 8},
            "canary": {"version": "v3", "weight": weight},
        },
    )
    plan = build_serving(md, CONFIG, ModelRef("v2", "u2"), ModelRef("v3", "u3"), weight)
    canary = next(o for o in plan.apply if o["metadata"]["name"] == "ranker-canary")
    assert canary["spec"]["replicas"] == replicas
    assert canary["spec"]["template"]["metadata"]["labels"][names.TRACK_LABEL] == "canary"
    assert "--model" in (args := canary["spec"]["template"]["spec"]["containers"][0]["args"]) and args[2] == "u3"
    svc = next(o for o in plan.apply if o["kind"] == "Service")
    # One Service spreads requests over both tracks' pods.
    assert svc["spec"]["selector"].items() <= canary["spec"]["template"]["metadata"]["labels"].items()
    assert plan.delete == []


def test_spec_configmaps_are_immutable_and_hold_one_resource(make) -> None:
    run = build_step(make("SampleSet", "events"), CONFIG)
    assert run.configmap["immutable"] is True
    docs = list(yaml.safe_load_all(run.configmap["data"]["spec.yaml"]))
    assert len(docs) == 1 and docs[0]["kind"] == "SampleSet"
