"""A SampleSet that follows its source runs its step in rounds: when the next one starts, what
its Job is called, and what the status says between rounds (nothing new: nothing written)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recplane.operator import names
from recplane.operator.artifacts import Artifacts
from recplane.operator.builders import build_step
from recplane.operator.builders.steps import follow_interval, follows, step_key
from recplane.operator.config import OperatorConfig
from recplane.operator.controllers import CONTROLLERS, Context, reconcile
from recplane.operator.controllers.steps import follow_plan, round_delay, round_of
from recplane.operator.status import Verdict
from recplane.store import LocalStore, Manifest

Obj = dict[str, Any]
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
FOLLOWED = {"source": {"format": "parquet", "uri": "s3://logs/feed/", "follow": True, "followInterval": "1m"}}


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def finish(job: Obj, at: datetime, ok: bool = True) -> Obj:
    """The Job as the Job controller leaves it once its pod has ended."""
    job = copy.deepcopy(job)
    if ok:
        job["status"] = {
            "succeeded": 1,
            "completionTime": stamp(at),
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": stamp(at)}],
        }
    else:
        job["status"] = {
            "failed": 1,
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": stamp(at)}
            ],
        }
    return job


def round_job(resource: Obj, number: int, finished_at: datetime | None = None, ok: bool = True) -> Obj:
    job = build_step(resource, OperatorConfig(), None, number).job
    return finish(job, finished_at, ok) if finished_at else {**job, "status": {"active": 1}}


# ---------------------------------------------------------------------------------------- naming
def test_each_round_of_a_followed_sampleset_is_its_own_job_of_the_same_run(make) -> None:
    ss = make("SampleSet", "events", FOLLOWED)
    assert follows(ss) and follow_interval(ss) == "1m"
    first, second = build_step(ss, OperatorConfig(), None, 0), build_step(ss, OperatorConfig(), None, 1)
    assert first.key == second.key == step_key(ss)
    assert first.name != second.name
    assert first.name.endswith("-0") and second.name.endswith("-1")
    labels = second.job["metadata"]["labels"]
    assert (labels[names.RUN_LABEL], labels[names.ROUND_LABEL]) == (second.key, "1")
    assert round_of(second.job) == 1
    # The spec ConfigMap goes with each round's Job (and is garbage-collected with it).
    assert second.configmap["metadata"]["name"] == second.name
    # The same round of the same input is always the same Job: a repeat creates nothing new.
    assert build_step(ss, OperatorConfig(), None, 1).job == second.job


def test_editing_the_follow_interval_keeps_the_rounds_going_and_other_edits_start_afresh(make) -> None:
    ss = make("SampleSet", "events", FOLLOWED)
    slower = make("SampleSet", "events", {"source": {**FOLLOWED["source"], "followInterval": "10m"}})
    slower["metadata"]["uid"] = ss["metadata"]["uid"]
    assert step_key(slower) == step_key(ss)
    assert build_step(slower, OperatorConfig(), None, 3).name == build_step(ss, OperatorConfig(), None, 3).name
    other = make("SampleSet", "events", {"source": {**FOLLOWED["source"], "uri": "s3://logs/other/"}})
    assert step_key(other) != step_key(ss)
    unset = make("SampleSet", "events", {"source": {"format": "parquet", "uri": "s3://logs/feed/", "follow": True}})
    assert follow_interval(unset) == "1m" and step_key(unset) == step_key(ss)


def test_a_sampleset_that_does_not_follow_keeps_one_job_per_input(make) -> None:
    ss = make("SampleSet", "events")
    assert not follows(ss) and not follows(make("FeatureSet", "features"))
    run = build_step(ss, OperatorConfig())
    assert names.ROUND_LABEL not in run.job["metadata"]["labels"]
    assert run.name == names.dns_name("events", names.short_hash(run.key, ss["metadata"]["uid"]))
    with pytest.raises(ValueError, match="does not follow its source"):
        build_step(ss, OperatorConfig(), None, 1)


# -------------------------------------------------------------------------------------- schedule
def test_the_first_round_starts_at_once(make) -> None:
    plan = follow_plan([], 60, T0, 300)
    assert (plan.start, plan.next_round, plan.current, plan.last) == (True, 0, None, None)


def test_no_round_starts_while_one_runs(make) -> None:
    ss = make("SampleSet", "events", FOLLOWED)
    done, running = round_job(ss, 0, T0), round_job(ss, 1)
    plan = follow_plan([running, done], 60, T0 + timedelta(hours=1), 300)
    assert not plan.start and plan.due_at is None and plan.wait(T0) is None
    assert plan.current is running and plan.last is done and plan.next_round == 2


def test_the_next_round_starts_an_interval_after_the_last_finished(make) -> None:
    ss = make("SampleSet", "events", FOLLOWED)
    rounds = [round_job(ss, 0, T0 - timedelta(minutes=5)), round_job(ss, 1, T0)]
    early = follow_plan(rounds, 60, T0 + timedelta(seconds=20), 300)
    assert not early.start and early.next_round == 2
    assert early.due_at == T0 + timedelta(minutes=1)
    assert early.wait(T0 + timedelta(seconds=20)) == 40
    due = follow_plan(rounds, 60, T0 + timedelta(seconds=60), 300)
    assert due.start and due.next_round == 2 and due.last is rounds[1]
    # Counted from the Jobs, not from their order in a list or from memory.
    assert follow_plan(list(reversed(rounds)), 60, T0 + timedelta(seconds=60), 300) == due


def test_a_job_from_before_rounds_counts_as_the_round_before_the_first(make) -> None:
    ss = make("SampleSet", "events", FOLLOWED)
    legacy = round_job(ss, 0, T0)
    del legacy["metadata"]["labels"][names.ROUND_LABEL]
    plan = follow_plan([legacy], 60, T0 + timedelta(minutes=2), 300)
    assert plan.start and plan.next_round == 1 and plan.last is legacy


def test_failed_rounds_in_a_row_back_off(make) -> None:
    assert [round_delay(60, n, 300) for n in range(5)] == [60, 60, 120, 240, 300]
    assert round_delay(3600, 4, 300) == 3600  # never sooner than the interval
    assert round_delay(0, 0, 300) == 1  # "0s" does not loop
    ss = make("SampleSet", "events", FOLLOWED)
    rounds = [round_job(ss, 0, T0 - timedelta(minutes=9)), *(round_job(ss, i, T0, ok=False) for i in (1, 2))]
    plan = follow_plan(rounds, 60, T0 + timedelta(seconds=90), 300)
    assert plan.failures == 2 and not plan.start and plan.due_at == T0 + timedelta(minutes=2)


# ------------------------------------------------------------------------------ the whole loop
class FakeKube:
    """Just enough of an API server: Jobs, ConfigMaps, a Secret and status writes, counted."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Obj] = {}
        self.status_writes = 0
        self.written: Obj = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self._uid = 0

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        if kind == "Secret":
            return {"data": {"RECPLANE_STORE": "eA=="}}
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str, selector: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (k, _), o in self.objects.items() if k == kind]

    def create(self, obj: Obj, field_manager: str = "") -> Obj | None:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return None
        self._uid += 1
        made = copy.deepcopy(obj)
        made["metadata"].update(uid=f"uid-{self._uid}", creationTimestamp=stamp(T0 + timedelta(seconds=self._uid)))
        self.objects[key] = made
        if obj["kind"] == "Job":
            self.created.append(obj["metadata"]["name"])
        return copy.deepcopy(made)

    def apply(self, obj: Obj, field_manager: str = "") -> Obj:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)
        return obj

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        self.deleted.append(name)
        return self.objects.pop((kind, name), None) is not None

    def patch_status(self, obj: Mapping[str, Any], status: Obj) -> Obj:
        self.status_writes += 1
        self.written = copy.deepcopy(status)
        rv = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}, "status": status}

    def jobs(self) -> Sequence[Obj]:  # `list` is a verb here
        return sorted((o for (k, _), o in self.objects.items() if k == "Job"), key=round_of)

    def finish(self, name: str, at: datetime, ok: bool = True) -> None:
        self.objects[("Job", name)] = finish(self.objects[("Job", name)], at, ok)


class Loop:
    """A followed SampleSet reconciled at chosen times, its status written back as the API server would."""

    def __init__(self, make: Any, tmp_path: Path) -> None:
        self.kube = FakeKube()
        self.store = LocalStore(tmp_path / "store")
        self.tmp = tmp_path
        self.events: list[tuple[str, str]] = []
        self.now = T0
        self.obj = make("SampleSet", "events", FOLLOWED)
        self.ctx = self.context()

    def context(self) -> Context:
        return Context(
            kube=self.kube,  # type: ignore[arg-type]
            artifacts=Artifacts(self.store),
            config=OperatorConfig(),
            events=lambda _obj, _type, reason, message: self.events.append((reason, message)),
            clock=lambda: self.now,
        )

    def reconcile(self, at: datetime) -> Verdict:
        self.now = at
        writes = self.kube.status_writes
        verdict = reconcile(self.ctx, CONTROLLERS["SampleSet"], self.obj)
        assert verdict is not None
        if self.kube.status_writes > writes:
            rv = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
            self.obj = {**self.obj, "metadata": {**self.obj["metadata"], "resourceVersion": rv}}
            self.obj["status"] = self.kube.written
        return verdict

    def publish(self, version: str, rows: int) -> Manifest:
        staging = self.tmp / f"stage-{version}"
        staging.mkdir()
        (staging / "part-0.parquet").write_bytes(b"rows")
        manifest = Manifest(
            kind="sampleset", namespace="team-a", name="events", version=version, status={"trainRows": rows}
        )
        return self.store.publish(staging, manifest)


@pytest.fixture
def loop(make: Any, tmp_path: Path) -> Loop:
    return Loop(make, tmp_path)


def test_a_followed_sampleset_runs_a_round_per_interval_and_writes_status_only_for_news(loop: Loop) -> None:
    kube = loop.kube
    first = loop.reconcile(T0)
    assert first.reason == "JobCreated" and len(kube.created) == 1 and kube.created[0].endswith("-0")
    loop.reconcile(T0 + timedelta(seconds=1))  # a repeat starts nothing
    assert len(kube.created) == 1

    # Round 0 stores v1: Ready, Following, the next round due a minute after it finished.
    loop.publish("v1", 900)
    kube.finish(kube.created[0], T0 + timedelta(seconds=10))
    ready = loop.reconcile(T0 + timedelta(seconds=11))
    assert (ready.phase, ready.reason, ready.ready) == ("Ready", "Following", True)
    assert ready.requeue_after == pytest.approx(59)
    assert "every 1m" in ready.message and "s3://logs/feed/" in ready.message
    assert (loop.obj["status"]["version"], loop.obj["status"]["versions"]) == ("v1", ["v1"])
    writes, events = kube.status_writes, len(loop.events)

    # Waiting, then the next round and an idle round (no new files): no status write, no Event.
    assert loop.reconcile(T0 + timedelta(seconds=40)).requeue_after == pytest.approx(30)
    assert len(kube.created) == 1
    assert loop.reconcile(T0 + timedelta(seconds=70)).reason == "Following"
    assert len(kube.created) == 2 and kube.created[1].endswith("-1")
    loop.reconcile(T0 + timedelta(seconds=71))  # while it runs
    kube.finish(kube.created[1], T0 + timedelta(seconds=75))
    idle = loop.reconcile(T0 + timedelta(seconds=76))
    assert idle.reason == "Following" and idle.requeue_after == pytest.approx(59)
    assert (kube.status_writes, len(loop.events)) == (writes, events)

    # Round 2 stores v2: the status shows it, one notice announces it.
    loop.reconcile(T0 + timedelta(seconds=136))
    assert len(kube.created) == 3
    loop.publish("v2", 50)
    kube.finish(kube.created[2], T0 + timedelta(seconds=140))
    loop.reconcile(T0 + timedelta(seconds=141))
    st = loop.obj["status"]
    assert (st["version"], st["versions"], st["trainRows"]) == ("v2", ["v1", "v2"], 50)
    assert kube.status_writes == writes + 1
    assert loop.events[events:] == [("VersionStored", "version v2 stored from new files under s3://logs/feed/")]

    # A restarted operator (nothing remembered) makes the same decisions: no second Job for a round.
    loop.ctx = loop.context()
    loop.reconcile(T0 + timedelta(seconds=150))
    assert len(kube.created) == 3
    loop.reconcile(T0 + timedelta(seconds=200))
    loop.ctx = loop.context()
    loop.reconcile(T0 + timedelta(seconds=201))
    assert len(kube.created) == 4 and len(set(kube.created)) == 4


def test_a_failed_round_keeps_the_last_version_and_is_retried(loop: Loop) -> None:
    kube = loop.kube
    loop.reconcile(T0)
    loop.publish("v1", 900)
    kube.finish(kube.created[0], T0 + timedelta(seconds=10))
    loop.reconcile(T0 + timedelta(seconds=11))
    loop.reconcile(T0 + timedelta(seconds=70))
    kube.finish(kube.created[1], T0 + timedelta(seconds=80), ok=False)
    failed = loop.reconcile(T0 + timedelta(seconds=81))
    assert (failed.phase, failed.reason, failed.ready, failed.failed) == ("Failed", "StepFailed", True, True)
    assert "the next round starts at 2026-03-01T12:02:20Z" in failed.message
    assert loop.obj["status"]["version"] == "v1"
    loop.reconcile(T0 + timedelta(seconds=141))
    assert len(kube.created) == 3
    assert f"trying again with Job {kube.created[2]}" in loop.obj["status"]["conditions"][0]["message"]
    # The retry finds nothing new: Following again, with v1.
    kube.finish(kube.created[2], T0 + timedelta(seconds=150))
    back = loop.reconcile(T0 + timedelta(seconds=151))
    assert (back.reason, loop.obj["status"]["version"]) == ("Following", "v1")


def test_only_a_few_finished_rounds_are_kept(loop: Loop) -> None:
    kube = loop.kube
    loop.publish("v1", 900)
    at = T0
    for _ in range(8):
        loop.reconcile(at)
        kube.finish(kube.jobs()[-1]["metadata"]["name"], at + timedelta(seconds=1))
        at += timedelta(seconds=70)
    loop.reconcile(at)
    kept = [round_of(j) for j in kube.jobs()]
    # The round that runs, the last finished one, and job_history (2) more.
    assert kept == [5, 6, 7, 8]
