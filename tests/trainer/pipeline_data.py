"""Tiny stored samples and features for trainer tests (also imported by the torchrun worker script)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recplane.api.featureset import FeatureSetSpec
from recplane.api.resource import Resource, parse_resource
from recplane.api.sampleset import SampleSetSpec
from recplane.data.catalogs import feed_features
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import LocalStore

NS = "default"
SAMPLES = "feed"
FEATURES = "feed-features"


def build_store(root: Path, events: int = 6000) -> LocalStore:
    """A small synthetic feed SampleSet and the feed catalog over it."""
    store = LocalStore(root)
    spec = SampleSetSpec.model_validate(
        {
            "source": {"format": "synthetic", "synthetic": {"events": events, "users": 300, "items": 600, "seed": 3}},
            "inactiveUsers": {"minEvents": 2},
        }
    )
    materialize_sampleset(spec, store, NS, SAMPLES)
    materialize_featureset(
        FeatureSetSpec(sample_set_ref={"name": SAMPLES}, features=feed_features()), store, NS, FEATURES
    )
    return store


def trainjob(name: str, **overrides: Any) -> dict[str, Any]:
    """A TrainJob document: small batches, few steps; `overrides` merge into spec sections."""
    spec: dict[str, Any] = {
        "featureSetRef": {"name": FEATURES},
        "model": {"type": "deepfm", "embeddingDim": 8, "denseLayers": [16, 8]},
        "optimization": {"batchSize": 128, "epochs": 1, "seed": 1},
        "distributed": {"workers": 1, "procsPerWorker": 2, "sharding": "table_wise"},
        "checkpoint": {"everySteps": 5, "keep": 2},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(spec.get(section), dict):
            spec[section] = {**spec[section], **values}
        else:
            spec[section] = values
    return {"apiVersion": "recplane.io/v1alpha1", "kind": "TrainJob", "metadata": {"name": name}, "spec": spec}


def resource(doc: dict[str, Any]) -> Resource:
    return parse_resource(doc)


def write_spec(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
