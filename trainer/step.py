"""`recplane step train`: what a TrainJob's pods run (under torchrun) and what the local runner calls.

`train_job` is the library entry (raises errors); `train_step(path)` wraps it for the
command line: progress on stderr from rank 0, the model version's manifest as JSON on
the last line of stdout (rank 0), and a one-line error with exit status 2 for bad input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from recplane.api.resource import Resource, ResourceError, load_resource
from recplane.api.trainjob import TrainJobSpec
from recplane.data.errors import DataError
from recplane.store import Manifest, Store, StoreError, open_store

from .checkpoint import Checkpoints
from .data import SampleData
from .dist import DistContext, broadcast_object, process_group
from .errors import TrainError
from .job import KIND, fingerprint, load_warm_start, model_version, resolve
from .loop import Trainer
from .models import UnknownModelError
from .publish import PublishRequest, publish
from .telemetry import TrainTelemetry
from .weights import gather_unsharded


def train_job(
    resource: Resource,
    store: Store | None = None,
    warm_start_from: str | Path | None = None,
    data_version: str | None = None,
) -> Manifest:
    """Train `resource` (a TrainJob) in the current process group and store its model version.

    `warm_start_from`: a model version id of this TrainJob (or a version directory) whose weights
    start the run; `data_version`: train on this SampleSet version instead of the one the FeatureSet
    was computed over (continuous training). Returns the version's manifest on every rank; an
    existing version with the same content is returned without training.
    """
    spec = resource.spec
    if not isinstance(spec, TrainJobSpec):
        raise TrainError("kind", f"expected a TrainJob, got a {resource.kind}")
    store = store or open_store()
    with process_group(spec.distributed.backend) as ctx:
        telemetry = TrainTelemetry(resource.name, enabled=ctx.is_main)
        try:
            return _run(ctx, resource, spec, store, warm_start_from, data_version, telemetry)
        finally:
            telemetry.close()


def _run(
    ctx: DistContext,
    resource: Resource,
    spec: TrainJobSpec,
    store: Store,
    warm_start_from: str | Path | None,
    data_version: str | None,
    telemetry: TrainTelemetry,
) -> Manifest:
    ns, name = resource.namespace, resource.name
    telemetry.log(f"trainjob {ns}/{name}: store {store.uri}, {ctx.world_size} process(es), backend {ctx.backend}")
    job = resolve(store, ns, name, spec, warm_start_from, data_version)
    version = model_version(spec, job)
    existing = store.manifest(ns, KIND, name, version)
    if existing is not None:
        telemetry.log(f"trainjob {ns}/{name}: model version {version} already stored")
        if ctx.is_main:
            store.set_latest(ns, KIND, name, version)
        return existing
    recall = spec.model.type in ("two_tower", "fm_recall")
    data = SampleData(store, job.samples, job.processor, item_column=job.columns.item if recall else None)
    if spec.model.type == "two_tower":
        data.item_frequencies = data.positive_item_frequencies()
    checkpoints = Checkpoints(store, ns, name, ctx, fingerprint(spec, job), spec.checkpoint.keep)
    try:
        trainer = Trainer(ctx, spec, job.inputs, data, telemetry, checkpoints)
        trainer.build(load_warm_start(job))
        summary = trainer.train()
        metrics = trainer.evaluate()
        telemetry.log(f"validation: AUC {metrics['auc']}, logloss {metrics['logloss']}")
        state = gather_unsharded(trainer.dmp, ctx)
        manifest: Manifest | None = None
        if ctx.is_main:
            assert state is not None
            request = PublishRequest(
                store=store,
                namespace=ns,
                name=name,
                version=version,
                spec=spec,
                job=job,
                data=data,
                summary=summary,
                metrics=metrics,
                plan=trainer.plan,
                world_size=ctx.world_size,
                backend=ctx.backend,
                log=telemetry.log,
            )
            manifest = publish(request, state)
            telemetry.log(f"model version {version} stored at {manifest.uri}")
            checkpoints.delete_all()
        result = broadcast_object(manifest)
        assert isinstance(result, Manifest)
        return result
    finally:
        checkpoints.close()


def train_step(
    path: Path | str, warm_start_from: str | None = None, data_version: str | None = None
) -> Manifest | None:
    """`recplane step train --spec FILE`.

    A TrainJob with `continuous` runs one continuous round instead (what a cluster's worker
    group does for each new FeatureSet version): warm-started from the promoted version, judged
    on the new data's hold-out, verdict recorded. None when that data was already judged.
    """
    rank = _env_rank()
    try:
        resource = load_resource(Path(path), "TrainJob")
        spec = resource.spec
        if isinstance(spec, TrainJobSpec) and spec.continuous is not None and warm_start_from is None:
            return _continuous_step(resource, rank)
        manifest = train_job(resource, warm_start_from=warm_start_from, data_version=data_version)
    except (TrainError, DataError, ResourceError, StoreError, UnknownModelError) as e:
        where = f" (rank {rank})" if rank else ""
        print(f"error: TrainJob {path}{where}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    if rank == 0:
        print(json.dumps(manifest.model_dump(mode="json", by_alias=True), separators=(",", ":")), flush=True)
    return manifest


def _continuous_step(resource: Resource, rank: int) -> Manifest | None:
    from .continuous import continuous_round

    store = open_store()
    result = continuous_round(
        resource,
        store,
        train=lambda r, s, warm: train_job(r, s, warm_start_from=warm),
        log=lambda message: print(message, file=sys.stderr, flush=True) if rank == 0 else None,
        judge=rank == 0,
    )
    if rank != 0:
        return None
    if result is not None:
        manifest: Manifest | None = result.manifest
    else:  # this data was judged before: the step's result is the version trained on it
        manifest = store.latest(resource.namespace, KIND, resource.name)
        print(f"trainjob {resource.namespace}/{resource.name}: no new data to train on", file=sys.stderr, flush=True)
    if manifest is not None:
        print(json.dumps(manifest.model_dump(mode="json", by_alias=True), separators=(",", ":")), flush=True)
    return manifest


def _env_rank() -> int:
    return int(os.environ.get("RANK", "0"))
