"""The SampleSet and FeatureSet steps: what a pod runs and what the local runner calls.

`materialize_sampleset` / `materialize_featureset` are pure with respect to the
store: same spec and inputs -> same version, returned without writing again.
Work happens in a local staging directory; the store sees the version only
when it is complete (manifest last), so a failure leaves nothing behind.

`sampleset_step(path)` / `featureset_step(path)` wrap them for `recplane step`:
progress on stderr, the manifest as JSON on the last line of stdout, and a
clear one-line error (exit status 1) for bad input.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from recplane.api.featureset import FeatureSetSpec, FeatureSetStatus, FeatureStats
from recplane.api.resource import ResourceError, load_resource
from recplane.api.sampleset import SampleSetSpec, SampleSetStatus
from recplane.store import Manifest, Store, StoreError, content_version, open_store

from . import strategies as st
from .errors import DataError
from .metrics import roc_auc
from .progress import RowProgress, log
from .samples import SAMPLESET_KIND, resolve_sampleset, write_shard
from .sources import open_source, read_events

if TYPE_CHECKING:
    from .features import FeatureProcessor

FEATURESET_KIND = "featureset"
# Spec fields that change how a step runs, not what it produces.
_NOT_CONTENT = ("resources", "deletionPolicy")
# Bump when a step's output for the same spec and inputs changes.
SAMPLESET_FORMAT = 1
FEATURESET_FORMAT = 1


def _content_spec(spec: SampleSetSpec | FeatureSetSpec) -> dict[str, Any]:
    wire = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    out = {k: v for k, v in wire.items() if k not in _NOT_CONTENT}
    if "source" in out:  # how often a followed source is looked at does not change what a version holds
        out["source"] = {k: v for k, v in out["source"].items() if k != "followInterval"}
    return out


# ---- SampleSet ---------------------------------------------------------------------------
def materialize_sampleset(spec: SampleSetSpec, store: Store, namespace: str, name: str) -> Manifest:
    """Read the events, apply the strategies in order, and store train/validation Parquet shards.

    Returns the version's manifest; an existing version with the same content is returned
    as is (and becomes the latest again).
    """
    exclude = _consumed_files(store, namespace, name) if spec.source.follow else None
    events = open_source(spec.source, exclude=exclude)
    if exclude is not None and not events.files:
        current = store.latest(namespace, SAMPLESET_KIND, name)
        if current is not None:
            log(f"sampleset {namespace}/{name}: no new files under {spec.source.uri}; version {current.version} stays")
            return current
    version = content_version("SampleSet", SAMPLESET_FORMAT, _content_spec(spec), events.identity)
    existing = store.manifest(namespace, SAMPLESET_KIND, name, version)
    if existing is not None:
        store.set_latest(namespace, SAMPLESET_KIND, name, version)
        log(f"sampleset {namespace}/{name}: version {version} already stored")
        return existing

    with RowProgress(f"reading {events.description}") as progress:
        table = read_events(events, on_rows=progress.advance)
    rows: dict[str, int] = {"source": table.num_rows}
    table = st.normalize_time(table, spec.columns.timestamp)
    table = st.apply_label(table, spec.label)
    extra: dict[str, Any] = {}
    if spec.dedupe.enabled:
        before = table.num_rows
        table = st.dedupe(table, spec.dedupe)
        rows["dedupe"] = table.num_rows
        st._not_empty(table, before, "spec.dedupe", "dedupe")
    if spec.bot_filter.enabled:
        before = table.num_rows
        table, extra["botUsers"] = st.bot_filter(table, spec.bot_filter, spec.columns.user, spec.columns.timestamp)
        rows["botFilter"] = table.num_rows
        st._not_empty(table, before, "spec.botFilter.maxEvents", "the bot filter")
    if spec.inactive_users.enabled:
        before = table.num_rows
        table, extra["inactiveUsers"] = st.inactive_users(table, spec.inactive_users, spec.columns.user)
        rows["inactiveUsers"] = table.num_rows
        st._not_empty(
            table,
            before,
            "spec.inactiveUsers.minEvents",
            f"dropping users with < {spec.inactive_users.min_events} events",
        )
    train, validation = st.time_split(table, spec.split, spec.columns.timestamp)
    del table
    seed = int(version[:8], 16)
    train = st.negative_sampling(train, spec.negative_sampling, seed)
    if spec.negative_sampling.rate < 1.0:
        rows["negativeSampling"] = train.num_rows + validation.num_rows
        st._not_empty(train, train.num_rows, "spec.negativeSampling.rate", "negative sampling")
    # Shuffle training rows once, so every rank's contiguous share is a random sample.
    train = train.take(pa.array(np.random.default_rng(seed).permutation(train.num_rows)))
    validation = st.with_unit_weight(validation)

    with tempfile.TemporaryDirectory(prefix="recplane-sampleset-") as tmp:
        staging = Path(tmp)
        row_counts = {"train": train.num_rows, "validation": validation.num_rows}
        with RowProgress("writing shards", train.num_rows + validation.num_rows) as progress:
            for split_name, part in (("train", train), ("validation", validation)):
                row_counts.update(_write_shards(part, staging, split_name, spec.shard_rows, progress.advance))
        status = _sampleset_status(train, validation, rows, extra)
        status["version"] = version
        status["artifactUri"] = store.version_uri(namespace, SAMPLESET_KIND, name, version)
        manifest = Manifest(
            kind=SAMPLESET_KIND,
            namespace=namespace,
            name=name,
            version=version,
            spec=spec.to_wire(),
            inputs=events.identity,
            schema=status["schema"],
            row_counts=row_counts,
            status=status,
        )
        if spec.source.follow:
            manifest.inputs["consumed"] = sorted((exclude or set()) | {f.name for f in events.files})
        return store.publish(staging, manifest)


def _consumed_files(store: Store, namespace: str, name: str) -> set[str]:
    latest = store.latest(namespace, SAMPLESET_KIND, name)
    return set(latest.inputs.get("consumed", [])) if latest else set()


def _write_shards(
    table: pa.Table, staging: Path, split: str, shard_rows: int, advance: Callable[[int], None]
) -> dict[str, int]:
    out = {}
    (staging / split).mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        part = table.slice(start, shard_rows)
        rel = f"{split}/part-{i:05d}.parquet"
        write_shard(part, staging / rel)
        out[rel] = part.num_rows
        advance(part.num_rows)
    return out


def _sampleset_status(
    train: pa.Table, validation: pa.Table, rows: dict[str, int], extra: dict[str, Any]
) -> dict[str, Any]:
    label = np.concatenate([train[st.LABEL_COLUMN].to_numpy(), validation[st.LABEL_COLUMN].to_numpy()])
    weight = np.concatenate([train[st.WEIGHT_COLUMN].to_numpy(), validation[st.WEIGHT_COLUMN].to_numpy()])
    bayes_auc = None
    if st.P_LABEL_COLUMN in validation.column_names:
        auc = roc_auc(validation[st.P_LABEL_COLUMN].to_numpy(), validation[st.LABEL_COLUMN].to_numpy())
        bayes_auc = None if np.isnan(auc) else round(auc, 6)
    total = train.num_rows + validation.num_rows
    null_rates = {c: round((train[c].null_count + validation[c].null_count) / total, 6) for c in train.column_names}
    status = SampleSetStatus(
        rows=rows,
        train_rows=train.num_rows,
        validation_rows=validation.num_rows,
        # Weighted, so down-sampled negatives count as many as they stand for.
        positive_rate=round(float((label * weight).sum() / weight.sum()), 6),
        bayes_auc=bayes_auc,
        schema=[{"name": f.name, "type": str(f.type)} for f in train.schema],
    ).to_wire()
    status.pop("conditions", None)
    status.pop("versions", None)
    status["nullRates"] = null_rates
    status.update(extra)
    return status


def sampleset_step(path: Path) -> Manifest:
    """`recplane step sampleset --spec FILE`."""
    return _run_step(
        path, "SampleSet", lambda res, store: materialize_sampleset(res.spec, store, res.namespace, res.name)
    )


# ---- FeatureSet --------------------------------------------------------------------------
def check_sensitive(spec: FeatureSetSpec, namespace: str) -> list[str]:
    """Error messages for sensitive features this namespace may not use (empty when all is allowed)."""
    errors = []
    for i, f in enumerate(spec.features):
        if f.sensitive and namespace not in f.allowed_namespaces:
            allowed = ", ".join(f.allowed_namespaces) or "none"
            errors.append(
                f"spec.features[{i}] ({f.name}): sensitive feature not allowed in namespace {namespace!r} "
                f"(allowedNamespaces: {allowed}); remove the feature or ask its owner to allow this namespace"
            )
    return errors


def materialize_featureset(spec: FeatureSetSpec, store: Store, namespace: str, name: str) -> Manifest:
    """Compute statistics and vocabularies over the SampleSet and store the feature-spec artifact."""
    from .features import FEATURE_SPEC_FILE
    from .fitting import fit_processor

    refused = check_sensitive(spec, namespace)
    if refused:
        raise DataError("spec.features", "; ".join(refused))
    samples = resolve_sampleset(store, namespace, spec.sample_set_ref)
    grow = _follows(samples)
    previous = None
    if grow:
        # Vocabularies grow from the current version. Run again over the same samples, that version is
        # the answer (it grew from its own predecessor), not the base of yet another one.
        previous = store.latest(namespace, FEATURESET_KIND, name)
        if previous is not None and previous.version == _featureset_version(
            spec, samples, True, previous.inputs.get("grownFrom")
        ):
            log(f"featureset {namespace}/{name}: version {previous.version} already stored")
            return previous
    version = _featureset_version(spec, samples, grow, previous.version if previous else None)
    existing = store.manifest(namespace, FEATURESET_KIND, name, version)
    if existing is not None:
        store.set_latest(namespace, FEATURESET_KIND, name, version)
        log(f"featureset {namespace}/{name}: version {version} already stored")
        return existing
    processor, stats = fit_processor(spec, store, samples, grow=grow, previous=_processor(store, previous))
    with tempfile.TemporaryDirectory(prefix="recplane-featureset-") as tmp:
        staging = Path(tmp)
        processor.save(staging)
        status = FeatureSetStatus(
            version=version,
            sample_set_version=samples.version,
            spec_uri=store.version_uri(namespace, FEATURESET_KIND, name, version) + FEATURE_SPEC_FILE,
            features=[FeatureStats.model_validate(s) for s in stats],
        ).to_wire()
        status.pop("conditions", None)
        status.pop("versions", None)
        manifest = Manifest(
            kind=FEATURESET_KIND,
            namespace=namespace,
            name=name,
            version=version,
            spec=spec.to_wire(),
            inputs={
                "sampleSet": {"name": samples.name, "version": samples.version},
                **({"grownFrom": previous.version if previous else None} if grow else {}),
            },
            row_counts={"train": samples.row_counts.get("train", 0)},
            status=status,
        )
        return store.publish(staging, manifest)


def _follows(samples: Manifest) -> bool:
    """A SampleSet that follows its source: each version holds only the events that arrived since the last."""
    return bool(((samples.spec or {}).get("source") or {}).get("follow"))


def _featureset_version(spec: FeatureSetSpec, samples: Manifest, grow: bool, grown_from: str | None) -> str:
    parts: list[Any] = [_content_spec(spec), samples.version]
    if grow:  # the vocabularies depend on the version they grew from
        parts.append({"grownFrom": grown_from})
    return content_version("FeatureSet", FEATURESET_FORMAT, *parts)


def _processor(store: Store, manifest: Manifest | None) -> FeatureProcessor | None:
    """The FeatureProcessor of a stored version, or None (logged) when this recplane cannot read it."""
    from .features import FeatureProcessor

    if manifest is None:
        return None
    try:
        return FeatureProcessor.from_store(store, manifest)
    except (ValueError, KeyError, OSError, StoreError) as e:
        log(
            f"featureset {manifest.namespace}/{manifest.name}: version {manifest.version} unreadable ({e}); "
            "vocabularies start afresh"
        )
        return None


def featureset_step(path: Path) -> Manifest:
    """`recplane step featureset --spec FILE`."""
    return _run_step(
        path, "FeatureSet", lambda res, store: materialize_featureset(res.spec, store, res.namespace, res.name)
    )


# ---- shared ------------------------------------------------------------------------------
def _run_step(path: Path, kind: str, work: Callable[[Any, Store], Manifest]) -> Manifest:
    try:
        resource = load_resource(Path(path), kind)
        store = open_store()
        log(f"{kind.lower()} {resource.namespace}/{resource.name}: store {store.uri}")
        manifest = work(resource, store)
    except (DataError, ResourceError, StoreError) as e:
        print(f"error: {kind} {path}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(json.dumps(manifest.model_dump(mode="json", by_alias=True), separators=(",", ":")), flush=True)
    return manifest
