"""SampleSet and FeatureSet: one batch Job per run of `recplane step sampleset|featureset`.

A run is identified by a key hashed from the spec with its upstream reference
pinned to the version being consumed: the same input gives the same Job name
(so a repeated reconcile creates nothing new), a new spec or a new upstream
version gives a new Job.

A SampleSet that follows its source (`source.follow`) runs its step again and again over
the same input, to pick up new files: each run is a round, numbered from 0 per run key,
and round k is the Job `<name>-<hash>-<k>` labelled `recplane.io/round=k`. The next round
is counted from the Jobs that exist, so a restarted operator never starts a round twice.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recplane.api.sampleset import DEFAULT_FOLLOW_INTERVAL
from recplane.operator import names
from recplane.operator.builders import common
from recplane.operator.config import OperatorConfig

Obj = dict[str, Any]

STEP_COMMANDS = {"SampleSet": "sampleset", "FeatureSet": "featureset"}
# Where each kind names its upstream resource (pinned to the consumed version in the run's spec).
UPSTREAM_FIELDS = {"FeatureSet": "sampleSetRef", "TrainJob": "featureSetRef"}


@dataclass(frozen=True)
class StepRun:
    key: str
    job: Obj
    configmap: Obj
    """Owned by the Job once it exists (the controller adds that owner reference)."""

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])


def pinned_spec(kind: str, spec: Mapping[str, Any], upstream_version: str | None) -> Obj:
    """The spec with its upstream reference pinned to the version this run consumes."""
    out = copy.deepcopy(dict(spec))
    ref_field = UPSTREAM_FIELDS.get(kind)
    if ref_field and upstream_version:
        out[ref_field] = {**out.get(ref_field, {}), "version": upstream_version}
    return out


def run_key(kind: str, spec: Mapping[str, Any], ignore: tuple[str, ...] = ("deletionPolicy",)) -> str:
    """Content key of a run: fields that do not change the output (deletionPolicy, ...) are left out."""
    return names.short_hash(kind, {k: v for k, v in spec.items() if k not in ignore}, length=10)


def follows(resource: Mapping[str, Any]) -> bool:
    """A SampleSet that follows its source: its step runs again every `source.followInterval`."""
    source = (resource.get("spec") or {}).get("source") or {}
    return resource.get("kind") == "SampleSet" and bool(source.get("follow"))


def follow_interval(resource: Mapping[str, Any]) -> str:
    """`source.followInterval` of a followed SampleSet, or its default."""
    source = (resource.get("spec") or {}).get("source") or {}
    return str(source.get("followInterval") or DEFAULT_FOLLOW_INTERVAL)


def step_key(resource: Mapping[str, Any], upstream_version: str | None = None) -> str:
    """The run key: the spec with its upstream pinned. `source.followInterval` only says when the
    next round starts, not what a round produces, so editing it keeps the rounds going."""
    kind = resource["kind"]
    spec = pinned_spec(kind, resource.get("spec") or {}, upstream_version)
    source = spec.get("source")
    if isinstance(source, dict) and "followInterval" in source:
        spec["source"] = {k: v for k, v in source.items() if k != "followInterval"}
    return run_key(kind, spec)


def build_step(
    resource: Mapping[str, Any], config: OperatorConfig, upstream_version: str | None = None, round_number: int = 0
) -> StepRun:
    """The Job (and its spec ConfigMap) that computes one version of a SampleSet or FeatureSet.

    `resource` is the object as read from the API server (apiVersion, kind, metadata with
    uid, spec); `upstream_version` is the SampleSet version a FeatureSet is computed over;
    `round_number` is the round of a SampleSet that follows its source (see `follows`).
    """
    kind = resource["kind"]
    if kind not in STEP_COMMANDS:
        raise ValueError(f"build_step handles {', '.join(STEP_COMMANDS)}, not {kind}")
    meta = resource["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    rounds = follows(resource)
    if round_number and not rounds:
        raise ValueError(f"{kind} {name} does not follow its source: it has no round {round_number}")
    spec = pinned_spec(kind, resource.get("spec") or {}, upstream_version)
    key = step_key(resource, upstream_version)
    # The uid keeps a re-created resource from meeting the Jobs of its predecessor (deleted in the background).
    run_id = names.short_hash(key, meta.get("uid"))
    job_name = names.dns_name(name, run_id, str(round_number)) if rounds else names.dns_name(name, run_id)
    component = f"{STEP_COMMANDS[kind]}-step"
    extra = {names.RUN_LABEL: key, **({names.ROUND_LABEL: str(round_number)} if rounds else {})}
    labels = names.labels(kind, name, component, {**extra, **config.extra_labels})
    owner = names.owner_key(kind, name)

    step = common.container(
        "step",
        config.trainer_image,
        ["recplane"],
        ["step", STEP_COMMANDS[kind], "--spec", f"{names.SPEC_DIR}/{names.SPEC_FILE}"],
        env=[{"name": "RECPLANE_RUN", "value": key}],
        mounts=[{"name": "spec", "mountPath": names.SPEC_DIR, "readOnly": True}],
        config=config,
        spec=spec,
    )
    job: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": common.metadata(job_name, namespace, labels, owner),
        "spec": {
            "backoffLimit": config.step_retries,
            # Evictions and preemptions are not the step's fault: they do not use up retries.
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {names.OWNER_ANNOTATION: owner}},
                "spec": common.pod_spec([step], [common.spec_volume(job_name)], "Never"),
            },
        },
    }
    common.adopt([job], resource)
    configmap = common.spec_configmap(job_name, namespace, labels, common.spec_document(resource, spec))
    return StepRun(key=key, job=job, configmap=configmap)
