"""The reconcile queue: one reconcile at a time per resource, bursts of triggers coalesced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from recplane.operator.metrics import Metrics
from recplane.operator.runner import Key, Runner
from recplane.operator.status import Verdict

READY = Verdict(phase="Ready", reason="Succeeded", ready=True)


class Recorder:
    """A reconcile that takes a while and records who ran when, and how many ran at once per key."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.calls: list[tuple[Key, Mapping[str, Any] | None]] = []
        self.active: dict[Key, int] = {}
        self.overlap = False
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, key: Key, body: Mapping[str, Any] | None, retry: int, full: bool) -> Verdict | None:
        with self.lock:
            self.calls.append((key, body))
            self.active[key] = self.active.get(key, 0) + 1
            self.overlap |= self.active[key] > 1
            self.most_at_once = max(self.most_at_once, sum(self.active.values()))
        time.sleep(self.seconds)
        with self.lock:
            self.active[key] -= 1
        if key[2] == "boom":
            raise RuntimeError("API down")
        return READY

    def count(self, key: Key) -> int:
        return sum(1 for k, _ in self.calls if k == key)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def runner(recorder: Recorder, metrics: Metrics) -> Iterator[Runner]:
    r = Runner(recorder, metrics)
    r.start(4)
    yield r
    r.stop()


def settle(runner: Runner, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while runner.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.depth() == 0


A: Key = ("TrainJob", "ns", "a")
B: Key = ("TrainJob", "ns", "b")


def test_a_burst_of_triggers_costs_at_most_one_extra_reconcile(runner: Runner, recorder: Recorder) -> None:
    runner.poke(A)
    time.sleep(0.02)  # A is running now
    for _ in range(20):
        runner.poke(A)
    settle(runner)
    assert recorder.count(A) == 2
    assert not recorder.overlap


def test_queued_triggers_are_merged(recorder: Recorder, metrics: Metrics) -> None:
    runner = Runner(recorder, metrics)  # no workers yet: everything stays queued
    for _ in range(10):
        runner.poke(A)
        runner.poke(B)
    assert runner.depth() == 2
    runner.start(2)
    try:
        settle(runner)
    finally:
        runner.stop()
    assert (recorder.count(A), recorder.count(B)) == (1, 1)


def test_different_resources_reconcile_in_parallel(runner: Runner, recorder: Recorder) -> None:
    recorder.seconds = 0.2
    for name in "abcd":
        runner.poke(("SampleSet", "ns", name))
    settle(runner)
    assert recorder.most_at_once > 1 and not recorder.overlap


def test_a_change_handler_waits_for_the_running_reconcile_and_returns_its_own_verdict(
    runner: Runner, recorder: Recorder
) -> None:
    runner.poke(A)
    time.sleep(0.01)
    body = {"metadata": {"name": "a"}}
    assert runner.reconcile(A, body) == READY
    assert not recorder.overlap
    assert recorder.calls[-1] == (A, body)  # the change handler's fresh body, not a re-read


def test_a_failing_reconcile_is_counted_and_the_worker_lives_on(runner: Runner, recorder: Recorder, metrics) -> None:
    boom: Key = ("SampleSet", "ns", "boom")
    runner.poke(boom)
    settle(runner)
    runner.poke(A)
    settle(runner)
    assert recorder.count(A) == 1
    assert metrics.reconciles.labels("SampleSet", "error")._value.get() == 1
    with pytest.raises(RuntimeError, match="API down"):
        runner.reconcile(boom)  # a change handler sees the error: kopf retries it


def test_a_deleted_resource_is_dropped_from_the_queue(recorder: Recorder, metrics: Metrics) -> None:
    runner = Runner(recorder, metrics)
    runner.poke(A)
    runner.forget(A)
    runner.start(1)
    try:
        runner.poke(B)
        settle(runner)
    finally:
        runner.stop()
    assert recorder.count(A) == 0 and recorder.count(B) == 1
