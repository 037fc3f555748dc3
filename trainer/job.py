"""What a TrainJob trains on and what its result is called: references resolved in the store,
the model inputs checked, and the version id (a content hash) computed before any work."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recplane.api.sampleset import Columns
from recplane.api.trainjob import TrainJobSpec
from recplane.data.features import FeatureProcessor
from recplane.store import Manifest, Store, content_version

from .errors import TrainError
from .models import ModelInputs

KIND = "trainjob"
FEATURESET_KIND = "featureset"
SAMPLESET_KIND = "sampleset"
# Bump when the trainer's output for the same spec and inputs changes.
TRAINER_FORMAT = 2
# Spec fields that change how a job runs, not the model it produces.
_NOT_CONTENT = ("resources", "scheduling", "image", "deletionPolicy", "maxRestarts", "promoteIf", "checkpoint")


@dataclass
class JobInputs:
    """Everything a run reads, resolved."""

    featureset: Manifest
    samples: Manifest
    processor: FeatureProcessor
    inputs: ModelInputs
    columns: Columns
    warm_start: Manifest | None = None
    warm_start_dir: Path | None = None


def content_spec(spec: TrainJobSpec, without: tuple[str, ...] = ()) -> dict[str, Any]:
    wire = spec.to_wire()
    return {k: v for k, v in wire.items() if k not in _NOT_CONTENT + without}


def fingerprint(spec: TrainJobSpec, job: JobInputs) -> str:
    """What checkpoints must share to be resumed: everything but the distributed layout (checked separately,
    so a changed world size is reported instead of silently starting over)."""
    warm = job.warm_start.version if job.warm_start else None
    return content_version(
        "TrainJob",
        TRAINER_FORMAT,
        content_spec(spec, ("distributed",)),
        job.featureset.version,
        job.samples.version,
        warm,
    )


def model_version(spec: TrainJobSpec, job: JobInputs) -> str:
    warm = job.warm_start.version if job.warm_start else None
    return content_version(
        "TrainJob", TRAINER_FORMAT, content_spec(spec), job.featureset.version, job.samples.version, warm
    )


def resolve(
    store: Store,
    namespace: str,
    name: str,
    spec: TrainJobSpec,
    warm_start_from: str | Path | None = None,
    data_version: str | None = None,
) -> JobInputs:
    """The FeatureSet version (pinned or latest), its SampleSet version (or `data_version`), the processor."""
    ref = spec.feature_set_ref
    fs = (
        store.manifest(namespace, FEATURESET_KIND, ref.name, ref.version)
        if ref.version
        else store.latest(namespace, FEATURESET_KIND, ref.name)
    )
    if fs is None:
        which = f"version {ref.version}" if ref.version else "stored version"
        raise TrainError(
            "spec.featureSetRef",
            f"FeatureSet {namespace}/{ref.name} has no {which} in the store {store.uri}; "
            "materialise it first (recplane step featureset) or fix the name",
        )
    ss_ref = fs.inputs.get("sampleSet") or {}
    ss_name, ss_version = ss_ref.get("name"), data_version or ss_ref.get("version")
    samples = store.manifest(namespace, SAMPLESET_KIND, ss_name, ss_version) if ss_name and ss_version else None
    if samples is None:
        raise TrainError(
            "spec.featureSetRef",
            f"FeatureSet {ref.name} version {fs.version} was computed over SampleSet {ss_name} version "
            f"{ss_version}, which is not in the store {store.uri}; re-run the SampleSet and FeatureSet",
        )
    processor = FeatureProcessor.from_store(store, fs)
    columns = Columns.model_validate((samples.spec or {}).get("columns") or {})
    _check_columns(processor, samples)
    inputs = ModelInputs.from_processor(processor, spec.model.embedding_dim, columns.user, columns.item)
    if not inputs.sparse:
        raise TrainError(
            "spec.featureSetRef", f"FeatureSet {ref.name} has no sparse features; every model needs at least one"
        )
    job = JobInputs(featureset=fs, samples=samples, processor=processor, inputs=inputs, columns=columns)
    if warm_start_from is not None:
        _attach_warm_start(store, namespace, name, str(warm_start_from), job)
    return job


def _check_columns(processor: FeatureProcessor, samples: Manifest) -> None:
    """Every feature's source column must exist in the samples (a data_version override may lack one)."""
    have = {c.get("name") for c in samples.schema_} if samples.schema_ else None
    if have is None:
        return
    for f in processor.features:
        for c in f.columns:
            if c not in have:
                raise TrainError(
                    f"features[{f.name}]",
                    f"feature {f.name!r} reads column {c!r}, which SampleSet {samples.name} version "
                    f"{samples.version} does not have; use samples with that column or drop the feature",
                )


def _attach_warm_start(store: Store, namespace: str, name: str, source: str, job: JobInputs) -> None:
    from .export import CONFIG_FILE, MODEL_FILE, VersionConfig

    path = Path(source)
    if path.is_dir():
        directory, manifest = path, None
    else:
        manifest = store.manifest(namespace, KIND, name, source)
        if manifest is None:
            raise TrainError(
                "warmStartFrom", f"TrainJob {namespace}/{name} has no model version {source} in the store {store.uri}"
            )
        directory = store.fetch_version(manifest)
    if not (directory / MODEL_FILE).exists():
        raise TrainError("warmStartFrom", f"{directory} is not a model version ({MODEL_FILE} is missing)")
    old = VersionConfig.from_json(json.loads((directory / CONFIG_FILE).read_text()))
    check_warm_start(old.inputs, job.inputs, old.version)
    job.warm_start = manifest or Manifest(kind=KIND, namespace=namespace, name=name, version=old.version)
    job.warm_start_dir = directory


def check_warm_start(old: ModelInputs, new: ModelInputs, version: str) -> None:
    """A warm start reuses tables by name: every feature must still exist with the same table shape."""
    current = {f.name: f for f in new.sparse}
    for f in old.sparse:
        now = current.get(f.name)
        if now is None:
            raise TrainError(
                f"features[{f.name}]",
                f"feature {f.name!r} of warm-start model version {version} is missing from the FeatureSet; "
                "add it back, or train from scratch (no warm start)",
            )
        if (now.num_embeddings, now.embedding_dim) != (f.num_embeddings, f.embedding_dim):
            raise TrainError(
                f"features[{f.name}]",
                f"feature {f.name!r} has {now.num_embeddings} ids x {now.embedding_dim} dims but warm-start version "
                f"{version} has {f.num_embeddings} x {f.embedding_dim}; pin the FeatureSet version the model was "
                "trained with (spec.featureSetRef.version), or train from scratch",
            )
    old_names = {f.name for f in old.sparse}
    extra = [f.name for f in new.sparse if f.name not in old_names]
    if extra:
        raise TrainError(
            f"features[{extra[0]}]",
            f"feature {extra[0]!r} is new since warm-start version {version}, which has no table for it; "
            "train from scratch to add features",
        )


def load_warm_start(job: JobInputs) -> dict[str, torch.Tensor] | None:
    from .export import CONFIG_FILE, MODEL_FILE, VersionConfig

    if job.warm_start_dir is None:
        return None
    VersionConfig.from_json(json.loads((job.warm_start_dir / CONFIG_FILE).read_text()))  # a format this reads
    return torch.load(job.warm_start_dir / MODEL_FILE, map_location="cpu", weights_only=True, mmap=True)
