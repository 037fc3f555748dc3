"""Continuous (minute-level) training: one round = new data -> warm-started version -> verdict.

A round looks at the TrainJob's FeatureSet (latest version). When that FeatureSet was computed
over a SampleSet version no model of this TrainJob has been judged on yet (with a followed
source, each SampleSet version holds only the newest events), it trains a new version on it,
warm-started from the promoted version (`continuous.warmStart`), evaluates the promoted version
on the same fresh hold-out (the SampleSet version's validation split), and lets
`promotion.decide` judge. Warm-starting from the promoted rather than the newest version keeps a
rejected (e.g. corrupted) version from leaking into every later one.

Rounds are idempotent: a round with nothing new returns None; a repeated round finds the stored
version and its verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from recplane.api.resource import Resource
from recplane.api.trainjob import TrainJobSpec
from recplane.data.samples import iter_record_batches
from recplane.data.tensors import to_torch
from recplane.store import Manifest, Store

from . import promotion
from .errors import TrainError
from .evaluate import BinaryMetrics
from .export import load_model_version
from .job import FEATURESET_KIND, SAMPLESET_KIND

EVAL_BATCH = 4096


@dataclass(frozen=True)
class RoundResult:
    """What one round produced: the stored model version and its promotion verdict."""

    manifest: Manifest
    verdict: promotion.Verdict


@torch.no_grad()
def holdout_auc(store: Store, model_manifest: Manifest, samples: Manifest) -> float | None:
    """AUC of a stored model version on the validation split of `samples`, transformed by the
    model's own FeatureProcessor (ids it never saw map to OOV, exactly as in serving)."""
    loaded = load_model_version(store.fetch_version(model_manifest))
    metrics = BinaryMetrics(sync=False)
    seen = 0
    for batch in iter_record_batches(store, samples, "validation", EVAL_BATCH):
        tb = to_torch(loaded.processor.transform(batch))
        if tb.labels is None:
            raise TrainError("holdout", f"SampleSet {samples.name} version {samples.version} has no label column")
        metrics.update(loaded.model(tb.sparse, tb.dense), tb.labels, tb.weights)
        seen += batch.num_rows
    return metrics.compute()["auc"] if seen else None


def pending_samples(store: Store, namespace: str, spec: TrainJobSpec, judged: set[str]) -> Manifest | None:
    """The SampleSet version behind the TrainJob's current FeatureSet, when no version was judged on it."""
    ref = spec.feature_set_ref
    fs = (
        store.manifest(namespace, FEATURESET_KIND, ref.name, ref.version)
        if ref.version
        else store.latest(namespace, FEATURESET_KIND, ref.name)
    )
    if fs is None:
        return None
    ss = fs.inputs.get("sampleSet") or {}
    if not ss.get("version") or ss["version"] in judged:
        return None
    return store.manifest(namespace, SAMPLESET_KIND, ss["name"], ss["version"])


def continuous_round(
    resource: Resource,
    store: Store,
    train: Callable[[Resource, Store, str | None], Manifest] | None = None,
    log: Callable[[str], None] = lambda message: None,
    judge: bool = True,
) -> RoundResult | None:
    """Run one round for the TrainJob `resource`; None when there is no new data.

    `train(resource, store, warm_start_version)` trains and stores a version (default: in this
    process, `trainer.step.train_job`; the local runner may pass a multi-process launcher).
    Every rank of a process group calls this with `train` running on the group; only the one
    with `judge` (rank 0) scores the hold-out and records the verdict, the others return None.
    """
    spec = resource.spec
    if not isinstance(spec, TrainJobSpec):
        raise TrainError("kind", f"expected a TrainJob, got a {resource.kind}")
    ns, name = resource.namespace, resource.name
    verdicts = promotion.history(store, ns, name)
    samples = pending_samples(store, ns, spec, {v.sample_set_version for v in verdicts if v.sample_set_version})
    if samples is None:
        return None
    incumbent_id = promotion.promoted_version(store, ns, name)
    incumbent = store.manifest(ns, promotion.KIND, name, incumbent_id) if incumbent_id else None
    warm = incumbent.version if incumbent and (spec.continuous is None or spec.continuous.warm_start) else None
    log(f"trainjob {ns}/{name}: new SampleSet version {samples.version}; warm start from {warm or 'scratch'}")
    manifest = (train or _train_in_process)(resource, store, warm)
    if not judge:
        return None
    auc = (manifest.status.get("metrics") or {}).get("auc")
    incumbent_auc = holdout_auc(store, incumbent, samples) if incumbent else None
    decision = promotion.decide(auc, incumbent_auc, spec.promote_if)
    verdict = promotion.Verdict(
        version=manifest.version,
        promoted=decision.promoted,
        reason=decision.reason,
        auc=auc,
        incumbent=incumbent.version if incumbent else None,
        incumbent_auc=incumbent_auc,
        sample_set_version=samples.version,
        decided_at=promotion.now(),
    )
    promotion.record(store, ns, name, verdict)
    log(
        f"trainjob {ns}/{name}: version {manifest.version} {'promoted' if decision.promoted else 'rejected'}: "
        f"{decision.reason}"
    )
    return RoundResult(manifest, verdict)


def _train_in_process(resource: Resource, store: Store, warm_start: str | None) -> Manifest:
    from .step import train_job

    return train_job(resource, store, warm_start_from=warm_start)
