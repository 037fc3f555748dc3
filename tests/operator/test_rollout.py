"""Minute-level updates without a cluster: which versions a ModelDeployment serves (canary first),
the history it keeps, and the Events a TrainJob and a ModelDeployment post, each exactly once."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recplane.api import API_VERSION
from recplane.operator import names
from recplane.operator.artifacts import Artifacts, model_versions
from recplane.operator.builders import ModelRef
from recplane.operator.config import OperatorConfig
from recplane.operator.controllers import Context, reconcile
from recplane.operator.controllers.rollout import (
    MAX_HISTORY,
    CanaryPolicy,
    Rollout,
    canary_policy,
    duration_seconds,
    plan_rollout,
    rejected_since,
    rollout_status,
    serving_notices,
)
from recplane.operator.controllers.serving import reconcile_serving
from recplane.operator.controllers.training import version_notices
from recplane.operator.status import Notice, Verdict
from recplane.store import LocalStore

Obj = dict[str, Any]
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = CanaryPolicy(weight=10, analysis="10m", seconds=600)
M1, M2, M3, M4 = (ModelRef(v, f"s3://b/team-a/trainjob/ranker/{v}/") for v in ("m1", "m2", "m3", "m4"))


def tj_versions(*aucs: float, rule: Mapping[str, Any] | None = None) -> list[Obj]:
    """status.versions of a TrainJob whose versions m1, m2, ... have these AUCs (promoteIf maxAucDrop 0.01)."""
    out = []
    for i, auc in enumerate(aucs, start=1):
        out.append({"version": f"m{i}", "uri": f"s3://b/team-a/trainjob/ranker/m{i}/", "metrics": {"auc": auc}})
    verdicts = _verdicts(aucs, rule if rule is not None else {"maxAucDrop": 0.01})
    return [{**v, **verdict} for v, verdict in zip(out, verdicts, strict=True)]


def _verdicts(aucs: tuple[float, ...], rule: Mapping[str, Any]) -> list[Obj]:
    from recplane.store import Manifest

    manifests = [
        Manifest(
            kind="trainjob",
            namespace="team-a",
            name="ranker",
            version=f"m{i}",
            status={"metrics": {"auc": auc}},
            created_at=T0 + timedelta(minutes=i),
        )
        for i, auc in enumerate(aucs, start=1)
    ]
    return [{k: v[k] for k in ("promoted", "reason") if k in v} for v in model_versions(manifests, rule)]


# ------------------------------------------------------------------------------------- the TrainJob
def test_each_new_model_version_is_announced_once_with_its_auc_and_the_reason() -> None:
    before = tj_versions(0.74)
    after = tj_versions(0.74, 0.71, 0.76)
    notices = version_notices(before, after)
    assert [(n.type, n.reason) for n in notices] == [("Warning", "VersionRejected"), ("Normal", "VersionPromoted")]
    assert notices[0].message == (
        "model version m2 (AUC 0.71) rejected: "
        "AUC 0.71 drops more than promoteIf.maxAucDrop 0.01 below the promoted 0.74"
    )
    assert notices[1].message.startswith("model version m3 (AUC 0.76) promoted")
    # The next reconcile (or a restarted operator) compares two statuses that both list them.
    assert version_notices(after, after) == ()
    # A version that drops out of the bounded list is no news either.
    assert version_notices(after, after[1:]) == ()


class FakeKube:
    """The API server as a dict: create, server-side apply (a spec change bumps the generation),
    delete, list by label, and status writes only over the resourceVersion that was read."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.version = 0
        self.status_writes = 0

    @staticmethod
    def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return str(obj["kind"]), str(meta.get("namespace") or "default"), str(meta["name"])

    def _stored(self, obj: Obj) -> Obj:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        obj["metadata"].setdefault("uid", f"uid-{self.version}")
        self.objects[self.key(obj)] = obj
        return copy.deepcopy(obj)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, api_version: str, kind: str, namespace: str, selector: str | None = None) -> list[Obj]:
        want = dict(pair.split("=", 1) for pair in selector.split(",")) if selector else {}
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind and ns == namespace and want.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def create(self, obj: Obj, field_manager: str = "") -> Obj | None:
        if self.key(obj) in self.objects:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["generation"] = 1
        return self._stored(obj)

    def apply(self, obj: Obj, field_manager: str = "") -> Obj:
        live = self.objects.get(self.key(obj))
        if live is None:
            made = self.create(obj)
            assert made is not None
            return made
        merged = {**copy.deepcopy(obj), "status": live.get("status") or {}}
        merged["metadata"] = {**live["metadata"], **copy.deepcopy(obj["metadata"])}
        if "replicas" in (live.get("spec") or {}) and "replicas" not in merged.get("spec", {}):
            merged["spec"]["replicas"] = live["spec"]["replicas"]  # still owned by its creator
        if merged.get("spec") != live.get("spec"):
            merged["metadata"]["generation"] = live["metadata"]["generation"] + 1
        return self._stored(merged)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        self.objects.pop((kind, namespace, name), None)

    def patch_status(self, obj: Mapping[str, Any], status: Obj) -> Obj:
        live = self.objects[self.key(obj)]
        assert live["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], "a stale status write"
        self.status_writes += 1
        return self._stored({**copy.deepcopy(live), "status": copy.deepcopy(status)})

    def roll_out(self, namespace: str, name: str) -> None:
        """What the Deployment controller and the kubelet do: every replica of the template ready."""
        dep = self.objects[("Deployment", namespace, name)]
        replicas = dep["spec"].get("replicas", 1)
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            **dict.fromkeys(("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"), replicas),
        }


class Cluster:
    """A ModelDeployment `ranker` that follows the promoted versions of TrainJob `ranker`, reconciled
    by the real controller over a FakeKube, with a clock the test moves."""

    def __init__(self, tmp_path: Path, canary: Obj | None, make: Any) -> None:
        self.kube = FakeKube()
        self.now = T0
        self.events: list[tuple[str, str, str]] = []
        self.ctx = Context(
            kube=self.kube,  # type: ignore[arg-type]
            artifacts=Artifacts(LocalStore(tmp_path / "store")),
            config=OperatorConfig(),
            events=lambda obj, type_, reason, message: self.events.append((type_, reason, message)),
            clock=lambda: self.now,
        )
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "recplane-store", "namespace": "team-a"},
                "data": {"RECPLANE_STORE": "czM6Ly9i"},
            }
        )
        self.kube.create(make("TrainJob", "ranker"))
        spec: Obj = {"model": {"trainJobRef": {"name": "ranker"}, "follow": "promoted"}}
        if canary is not None:
            spec["canary"] = canary
        self.kube.create(make("ModelDeployment", "ranker", spec=spec))

    def train(self, *aucs: float) -> None:
        """The TrainJob's status once rank 0 stored versions with these AUCs."""
        versions = tj_versions(*aucs)
        promoted = [v["version"] for v in versions if v["promoted"]]
        tj = self.kube.objects[("TrainJob", "team-a", "ranker")]
        tj["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Training"}],
            "versions": versions,
            "latestVersion": versions[-1]["version"],
            "promotedVersion": promoted[-1] if promoted else None,
        }

    def reconcile(self) -> Verdict:
        md = self.kube.get(API_VERSION, "ModelDeployment", "team-a", "ranker")
        assert md is not None
        verdict = reconcile(self.ctx, reconcile_serving, md)
        assert verdict is not None
        return verdict

    @property
    def status(self) -> Obj:
        return self.kube.objects[("ModelDeployment", "team-a", "ranker")]["status"]  # type: ignore[no-any-return]

    def served(self, track: str) -> str | None:
        dep = self.kube.objects.get(("Deployment", "team-a", "ranker" if track == "stable" else "ranker-canary"))
        return dep["spec"]["template"]["metadata"]["labels"][names.MODEL_VERSION_LABEL] if dep else None

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@pytest.fixture
def cluster(tmp_path: Path, make: Any) -> Cluster:
    return Cluster(tmp_path, {"weight": 25, "analysis": "10m"}, make)


def test_a_new_promoted_version_is_a_canary_first_and_the_stable_version_after_its_analysis(cluster) -> None:
    cluster.train(0.74)
    cluster.reconcile()
    cluster.kube.roll_out("team-a", "ranker")
    assert cluster.reconcile().reason == "Serving"
    # The first version has nothing to be compared with: it is the stable version at once.
    assert (cluster.served("stable"), cluster.served("canary")) == ("m1", None)

    cluster.train(0.74, 0.71)  # m2 is rejected: nothing to roll out
    assert cluster.reconcile().reason == "Serving"
    assert (cluster.served("stable"), cluster.served("canary")) == ("m1", None)

    cluster.train(0.74, 0.71, 0.76)  # m3 is promoted: the canary first
    assert cluster.reconcile().reason == "RollingOut"
    assert (cluster.served("stable"), cluster.served("canary")) == ("m1", "m3")
    assert (cluster.status["currentVersion"], cluster.status["canaryVersion"]) == ("m1", "m3")
    assert "canaryStartedAt" not in cluster.status  # rolled out, not serving yet
    canary = cluster.kube.objects[("Deployment", "team-a", "ranker-canary")]
    assert canary["spec"]["replicas"] == 1  # 25% next to the one stable replica

    cluster.kube.roll_out("team-a", "ranker-canary")
    cluster.now += timedelta(minutes=1)
    verdict = cluster.reconcile()
    assert (verdict.reason, verdict.ready, verdict.progressing) == ("CanaryAnalysis", True, True)
    assert verdict.requeue_after == 600
    assert cluster.status["canaryStartedAt"] == "2026-01-01T12:01:00Z"
    assert "2026-01-01T12:11:00Z" in verdict.message

    cluster.now += timedelta(minutes=9, seconds=59)
    writes = cluster.kube.status_writes
    verdict = cluster.reconcile()
    assert verdict.reason == "CanaryAnalysis" and verdict.requeue_after == 1.0
    assert cluster.kube.status_writes == writes  # a poll during the analysis writes nothing

    cluster.now += timedelta(seconds=1)
    assert cluster.reconcile().reason == "RollingOut"
    assert (cluster.served("stable"), cluster.served("canary")) == ("m3", None)
    assert cluster.status["currentVersion"] == "m3" and "canaryVersion" not in cluster.status
    cluster.kube.roll_out("team-a", "ranker")
    assert cluster.reconcile().reason == "Serving"

    history = cluster.status["history"]
    assert [h["version"] for h in history] == ["m1", "m2", "m3"]
    m1, m2, m3 = history
    assert m1["startedAt"] == "2026-01-01T12:00:00Z" and m1["promoted"] is True
    assert m1["reason"] == "promoted: AUC 0.74 passes promoteIf"
    assert "startedAt" not in m2 and m2["promoted"] is False
    assert m2["reason"] == "rejected: AUC 0.71 drops more than promoteIf.maxAucDrop 0.01 below the promoted 0.74"
    assert (m3["canaryStartedAt"], m3["startedAt"]) == ("2026-01-01T12:01:00Z", "2026-01-01T12:11:00Z")
    assert m3["reason"] == "promoted: AUC 0.76 passes promoteIf; canary at 25% for 10m first"

    # Each announced once, however often it was reconciled.
    for _ in range(3):
        cluster.reconcile()
    assert cluster.reasons().count("CanaryStarted") == 1 and cluster.reasons().count("CanaryPromoted") == 1
    started = next(m for _, r, m in cluster.events if r == "CanaryStarted")
    assert started == (
        "rolling out model version m3 as canary at 25% next to m1; "
        "it becomes the stable version once it has served, ready, for 10m"
    )
    promoted = next(m for _, r, m in cluster.events if r == "CanaryPromoted")
    assert promoted.startswith("model version m3 replaces m1 as the stable version")


def test_without_a_canary_a_new_promoted_version_replaces_the_stable_one_and_rejections_are_recorded(
    tmp_path: Path, make: Any
) -> None:
    cluster = Cluster(tmp_path, None, make)
    cluster.train(0.74)
    cluster.reconcile()
    cluster.train(0.74, 0.71, 0.76)  # both at once: m2 is recorded before m3
    cluster.reconcile()
    assert (cluster.served("stable"), cluster.served("canary")) == ("m3", None)
    history = cluster.status["history"]
    assert [(h["version"], h["promoted"], "startedAt" in h) for h in history] == [
        ("m1", True, True),
        ("m2", False, False),
        ("m3", True, True),
    ]
    assert "CanaryStarted" not in cluster.reasons()


def test_a_canary_that_stops_serving_starts_its_analysis_again(cluster) -> None:
    cluster.train(0.74)
    cluster.reconcile()
    cluster.kube.roll_out("team-a", "ranker")
    cluster.train(0.74, 0.76)
    cluster.reconcile()
    cluster.kube.roll_out("team-a", "ranker-canary")
    cluster.reconcile()
    assert cluster.status["canaryStartedAt"] == "2026-01-01T12:00:00Z"
    cluster.kube.objects[("Deployment", "team-a", "ranker-canary")]["status"]["readyReplicas"] = 0
    cluster.now += timedelta(minutes=20)
    cluster.reconcile()
    assert cluster.status["currentVersion"] == "m1" and "canaryStartedAt" not in cluster.status
    cluster.kube.roll_out("team-a", "ranker-canary")
    cluster.reconcile()
    assert cluster.status["canaryStartedAt"] == "2026-01-01T12:20:00Z"


# ------------------------------------------------------------------------------- pure: the rollout
def test_canary_first_needs_a_followed_trainjob_a_weight_and_no_fixed_version() -> None:
    assert canary_policy({"canary": {"weight": 10, "analysis": "1h30m"}}, "promoted") == CanaryPolicy(10, "1h30m", 5400)
    assert canary_policy({"canary": {"weight": 10}}, "latest") == CanaryPolicy(10, "10m", 600)
    assert canary_policy({"canary": {"weight": 10}}, "pinned") is None
    assert canary_policy({"canary": {"weight": 10}}, "uri") is None
    assert canary_policy({"canary": {"weight": 10, "version": "m1"}}, "promoted") is None
    assert canary_policy({"canary": {"weight": 0}}, "promoted") is None
    assert canary_policy({}, "promoted") is None
    assert duration_seconds("90s") == 90 and duration_seconds("2h") == 7200
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("10 minutes")


def status(current: ModelRef | None, canary: ModelRef | None = None, since: str | None = None) -> Obj:
    out: Obj = {}
    if current is not None:
        out.update(currentVersion=current.version, currentUri=current.uri)
    if canary is not None:
        out.update(canaryVersion=canary.version, canaryUri=canary.uri)
    if since is not None:
        out["canaryStartedAt"] = since
    return out


def test_a_serving_canary_keeps_its_turn_and_a_newer_version_is_the_next_canary() -> None:
    under_analysis = status(M1, M2, "2026-01-01T12:00:00Z")
    # m3 arrives while m2 serves as canary: m2 finishes its analysis first.
    assert plan_rollout(M3, under_analysis, POLICY, True, T0 + timedelta(minutes=5)) == Rollout(M1, M2, T0)
    assert plan_rollout(M3, under_analysis, POLICY, True, T0 + timedelta(minutes=10)) == Rollout(M2)
    # Then m3 is the canary, next to m2.
    assert plan_rollout(M3, status(M2), POLICY, False, T0 + timedelta(minutes=10)) == Rollout(M2, M3)
    # A canary that does not serve gives its place to the newer version at once.
    assert plan_rollout(M3, status(M1, M2), POLICY, False, T0) == Rollout(M1, M3)
    assert plan_rollout(M3, under_analysis, POLICY, False, T0 + timedelta(minutes=5)) == Rollout(M1, M3)


def test_without_a_policy_or_anything_served_the_chosen_version_is_stable_at_once() -> None:
    assert plan_rollout(M2, status(M1), None, False, T0) == Rollout(M2)
    assert plan_rollout(M1, {}, POLICY, False, T0) == Rollout(M1)
    assert plan_rollout(M1, status(M1, M2), POLICY, True, T0) == Rollout(M1)  # the TrainJob went back


def test_a_replaced_canary_says_so_in_the_history() -> None:
    versions = tj_versions(0.74, 0.75, 0.76)
    first = rollout_status({}, Rollout(M1), M1, "promoted", versions, POLICY, T0)
    second = rollout_status(first, Rollout(M1, M2), M2, "promoted", versions, POLICY, T0)
    third = rollout_status(second, Rollout(M1, M3), M3, "promoted", versions, POLICY, T0)
    m2 = third["history"][1]
    assert m2["version"] == "m2" and "startedAt" not in m2
    assert m2["reason"].endswith("; replaced by m3 before it became stable")
    assert third["history"][2]["version"] == "m3"


def test_rejections_are_recorded_from_the_newest_version_the_history_names() -> None:
    versions = tj_versions(0.74, 0.71, 0.76, 0.70)  # m2 and m4 rejected
    assert [v["promoted"] for v in versions] == [True, False, True, False]
    # A new deployment of m3: only m4 explains something (why the newest version is not served).
    before, after = rejected_since([], versions, "m3")
    assert (before, [e["version"] for e in after]) == ([], ["m4"])
    # One that served m1 and now moves to m3: m2 before m3's entry, m4 after it.
    before, after = rejected_since([{"version": "m1"}], versions, "m3")
    assert ([e["version"] for e in before], [e["version"] for e in after]) == (["m2"], ["m4"])
    # Once recorded, never again.
    assert rejected_since(
        [{"version": "m1"}, {"version": "m2"}, {"version": "m3"}, {"version": "m4"}], versions, "m3"
    ) == ([], [])


def test_the_history_is_bounded_and_keeps_what_serves() -> None:
    previous = status(M1)
    previous["history"] = [{"version": "m0", "startedAt": "2025-12-31T00:00:00Z", "reason": "promoted"}]
    previous["history"].append({"version": "m1", "startedAt": "2026-01-01T00:00:00Z", "reason": "promoted"})
    versions = tj_versions(0.80, *[0.50] * 19)  # m1, then 19 rejected (a status lists 20 versions)
    fields = rollout_status(previous, Rollout(M1), M1, "promoted", versions, POLICY, T0)
    history = fields["history"]
    assert len(history) == MAX_HISTORY
    # Rejections go first, the versions that served stay (rollback goes back to them).
    assert [h["version"] for h in history[:2]] == ["m0", "m1"]
    assert all(h["promoted"] is False for h in history[2:])
    assert [h["version"] for h in history[2:4]] == ["m3", "m4"] and history[-1]["version"] == "m20"


def test_canary_events_are_derived_from_the_status_before_and_after() -> None:
    started = serving_notices(status(M1), status(M1, M2), 10, POLICY)
    assert [n.reason for n in started] == ["CanaryStarted"]
    assert serving_notices(status(M1, M2), status(M1, M2, "2026-01-01T12:00:00Z"), 10, POLICY) == ()
    promoted = serving_notices(status(M1, M2, "2026-01-01T12:00:00Z"), status(M2), 10, POLICY)
    assert promoted == (
        Notice(
            "Normal",
            "CanaryPromoted",
            "model version m2 replaces m1 as the stable version (canary since 2026-01-01T12:00:00Z); "
            "the canary is removed",
        ),
    )
    assert serving_notices(status(M2), status(M2), 10, POLICY) == ()


def test_a_notice_is_posted_after_the_status_that_records_it_is_written(make: Any) -> None:
    kube = FakeKube()
    posted: list[str] = []
    ctx = Context(
        kube=kube,  # type: ignore[arg-type]
        artifacts=None,  # type: ignore[arg-type]
        config=OperatorConfig(),
        events=lambda obj, type_, reason, message: posted.append(reason),
    )
    tj = kube.create(make("TrainJob", "ranker"))
    assert tj is not None

    def controller(ctx: Context, obj: Obj, retry: int, full: bool) -> tuple[Verdict, Obj]:
        before = (obj.get("status") or {}).get("versions") or []
        after = tj_versions(0.74, 0.71)
        verdict = Verdict(phase="Running", reason="Training", progressing=True)
        return replace(verdict, notices=version_notices(before, after)), {"versions": after}

    reconcile(ctx, controller, tj)
    again = kube.get(API_VERSION, "TrainJob", "team-a", "ranker")
    assert again is not None
    reconcile(ctx, controller, again)
    assert posted == ["Training", "VersionPromoted", "VersionRejected"]
