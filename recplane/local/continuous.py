"""Continuous training on one machine: `recplane run --local` with a TrainJob that sets `continuous`.

Every `continuous.interval` one round runs the same steps a cluster runs: each SampleSet
(a followed source turns only the new event files into a new version), each FeatureSet over
it, then `trainer.continuous.continuous_round` for each continuous TrainJob (warm start,
fresh hold-out, promotion verdict). The loop runs until `stop` is set (Ctrl-C in the CLI) or
`max_rounds` rounds have run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recplane.api.featureset import FeatureSetSpec
from recplane.api.resource import Resource
from recplane.api.sampleset import SampleSetSpec
from recplane.api.trainjob import TrainJobSpec
from recplane.store import Store

if TYPE_CHECKING:
    from recplane.trainer.continuous import RoundResult


def continuous_trainjobs(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if isinstance(r.spec, TrainJobSpec) and r.spec.continuous is not None]


def interval_seconds(resources: list[Resource]) -> float:
    """The shortest `continuous.interval` of the continuous TrainJobs (seconds)."""
    from recplane.cli.options import parse_duration

    intervals = [
        parse_duration(r.spec.continuous.interval)
        for r in resources
        if isinstance(r.spec, TrainJobSpec) and r.spec.continuous is not None
    ]
    if not intervals:
        raise ValueError("no TrainJob sets spec.continuous; nothing to run continuously")
    return min(intervals)


@dataclass
class ContinuousLoop:
    store: Store
    resources: list[Resource]
    on_event: Callable[[str], None] = lambda message: None

    def round(self) -> list[RoundResult]:
        """One round over every resource; returns the `RoundResult`s of the TrainJobs that trained."""
        from recplane.data.steps import materialize_featureset, materialize_sampleset
        from recplane.trainer.continuous import continuous_round

        for res in self.resources:
            if isinstance(res.spec, SampleSetSpec):
                materialize_sampleset(res.spec, self.store, res.namespace, res.name)
        for res in self.resources:
            if isinstance(res.spec, FeatureSetSpec):
                materialize_featureset(res.spec, self.store, res.namespace, res.name)
        results: list[RoundResult] = []
        for res in continuous_trainjobs(self.resources):
            result = continuous_round(res, self.store, log=self.on_event)
            if result is not None:
                results.append(result)
        return results

    def run(self, stop: threading.Event, max_rounds: int | None = None) -> int:
        """Run rounds every interval until `stop` is set or `max_rounds` ran; returns the rounds run."""
        every = interval_seconds(self.resources)
        rounds = 0
        while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
            self.round()
            rounds += 1
            if max_rounds is not None and rounds >= max_rounds:
                break
            stop.wait(every)
        return rounds


def run_until_stopped(store: Store, resources: list[Resource], echo: Callable[[str], None]) -> int:
    """`recplane run --local` with a continuous TrainJob: rounds every interval until Ctrl-C.

    A failed round is reported and retried at the next interval (new files may fix it); the
    versions and verdicts already stored stay. Returns the exit status (0 after Ctrl-C).
    """
    from recplane.api.resource import ResourceError
    from recplane.data.errors import DataError
    from recplane.store import StoreError
    from recplane.trainer.errors import TrainError

    loop = ContinuousLoop(store, resources, on_event=echo)
    every = interval_seconds(resources)
    names = ", ".join(r.name for r in continuous_trainjobs(resources))
    echo(f"continuous training of {names}: a round every {every:g}s (Ctrl-C to stop)")
    stop = threading.Event()
    try:
        while not stop.is_set():
            try:
                if not loop.round():
                    echo("no new events; waiting")
            except (DataError, TrainError, ResourceError, StoreError) as e:
                echo(f"error: round failed, retrying in {every:g}s: {e}")
            stop.wait(every)
    except KeyboardInterrupt:
        echo("stopped")
    return 0
