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


def processes(res: Resource) -> int:
    """Training processes of a TrainJob on one machine: all its workers' processes."""
    assert isinstance(res.spec, TrainJobSpec)
    return res.spec.distributed.workers * res.spec.distributed.procs_per_worker


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
            if processes(res) > 1:
                result = self._round_under_torchrun(res)
            else:
                result = continuous_round(res, self.store, log=self.on_event)
            if result is not None:
                results.append(result)
        return results

    def _round_under_torchrun(self, res: Resource) -> RoundResult | None:
        """A round on several local processes: what a cluster's worker group runs for new data
        (`recplane step train` on a continuous TrainJob), launched by torchrun."""
        import tempfile
        from pathlib import Path

        import yaml

        from recplane.trainer import promotion
        from recplane.trainer.continuous import RoundResult, pending_samples
        from recplane.trainer.errors import TrainError
        from recplane.trainer.launch import run_torchrun

        assert isinstance(res.spec, TrainJobSpec)
        judged = {v.sample_set_version for v in promotion.history(self.store, res.namespace, res.name)}
        if pending_samples(self.store, res.namespace, res.spec, {v for v in judged if v}) is None:
            return None
        self.on_event(f"trainjob {res.namespace}/{res.name}: new data; training on {processes(res)} processes")
        with tempfile.TemporaryDirectory(prefix="recplane-round-") as tmp:
            spec = Path(tmp) / "trainjob.yaml"
            spec.write_text(yaml.safe_dump(res.to_wire(), sort_keys=False))
            log = Path(tmp) / "train.log"
            try:
                manifest = run_torchrun(spec, processes(res), {"RECPLANE_STORE": self.store.uri}, log_path=log)
            except TrainError as e:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
                raise TrainError("torchrun", f"{e}\n{tail}") from None
        verdict = next(
            (v for v in promotion.history(self.store, res.namespace, res.name) if v.version == manifest.version), None
        )
        if verdict is None:
            raise TrainError("torchrun", f"model version {manifest.version} was stored without a promotion verdict")
        self.on_event(
            f"trainjob {res.namespace}/{res.name}: version {manifest.version} "
            f"{'promoted' if verdict.promoted else 'rejected'}: {verdict.reason}"
        )
        return RoundResult(manifest, verdict)

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
