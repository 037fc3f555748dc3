"""Fixtures for the serving tests: a real FeatureSet over synthetic feed events (and, for the
endpoint tests, models trained on it and a running BentoML server; see the other fixtures)."""

from __future__ import annotations

import pytest
import torch

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data.catalogs import feed_features
from recplane.data.features import FeatureProcessor
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import LocalStore, Manifest, Store

torch.set_num_threads(1)
NS = "default"


@pytest.fixture(scope="session")
def feed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest]:
    """A store holding a small synthetic feed SampleSet and the feed feature catalog over it."""
    store = LocalStore(tmp_path_factory.mktemp("serving-store"))
    samples = SampleSetSpec.model_validate(
        {
            "source": {
                "format": "synthetic",
                "synthetic": {"events": 12_000, "users": 300, "items": 600, "authors": 60, "days": 2, "seed": 7},
            },
            "shardRows": 4000,
        }
    )
    materialize_sampleset(samples, store, NS, "feed")
    features = FeatureSetSpec.model_validate({"sampleSetRef": {"name": "feed"}, "features": feed_features()})
    manifest = materialize_featureset(features, store, NS, "feed-features")
    return store, manifest


@pytest.fixture(scope="session")
def processor(feed_store: tuple[Store, Manifest]) -> FeatureProcessor:
    store, manifest = feed_store
    return FeatureProcessor.from_store(store, manifest)
