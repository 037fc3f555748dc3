"""The quickstart pipeline: synthetic feed events to a live ranking endpoint.

The resources are the same kinds users apply to a cluster, sized so the whole
run fits in a few minutes on a laptop-class machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from recplane.api.featureset import FeatureSetSpec
from recplane.api.modeldeployment import ModelDeploymentSpec
from recplane.api.resource import Resource
from recplane.api.sampleset import SampleSetSpec
from recplane.api.trainjob import TrainJobSpec
from recplane.data.catalogs import feed_features

# Which raw columns a /rank request carries where: the user's, the moment's, each candidate's.
USER_COLUMNS = ("user_id", "recent_topics", "user_activity")
CONTEXT_COLUMNS = ("hour", "device", "network", "position", "referrer")
ITEM_COLUMNS = ("item_id", "author_id", "topic", "item_age_hours", "author_followers")


def quickstart_resources(namespace: str = "default", events: int = 300_000, model: str = "deepfm") -> list[Resource]:
    """SampleSet -> FeatureSet -> TrainJob -> ModelDeployment over the built-in feed generator."""
    # Most of the click signal is each user's taste over topics (a latent vector the features expose
    # only through the user's id and a few recent topics), so the population is small enough for the
    # model to learn every user's taste from their events: about 1,000 impressions per user. With a
    # catalog this small a post is shown to the same user again and again, so dedupe stays off (it
    # would drop most of the events).
    sampleset = SampleSetSpec.model_validate(
        {
            "source": {
                "format": "synthetic",
                "synthetic": {"shape": "feed", "events": events, "users": 200, "items": 300, "authors": 50},
            },
            "dedupe": {"enabled": False},
            "label": {"clickColumn": "clicked", "dwellColumn": "dwell_s", "minDwellSeconds": 3},
            "negativeSampling": {"rate": 0.5},
            "split": {"validationFraction": 0.15},
        }
    )
    featureset = FeatureSetSpec(sample_set_ref={"name": "feed-events"}, features=feed_features())  # type: ignore[arg-type]
    trainjob = TrainJobSpec.model_validate(
        {
            "featureSetRef": {"name": "feed-features"},
            "model": {"type": model, "embeddingDim": 16, "denseLayers": [128, 64]},
            "optimization": {"batchSize": 1024, "epochs": 5, "learningRate": 0.002, "gradientClipNorm": 10.0},
            "distributed": {"workers": 1, "procsPerWorker": 2, "sharding": "table_wise"},
            "checkpoint": {"everySteps": 200},
        }
    )
    deployment = ModelDeploymentSpec.model_validate(
        {"model": {"trainJobRef": {"name": f"feed-{model}"}, "follow": "latest"}, "maxCandidates": 500}
    )
    return [
        Resource("SampleSet", "feed-events", namespace, sampleset),
        Resource("FeatureSet", "feed-features", namespace, featureset),
        Resource("TrainJob", f"feed-{model}", namespace, trainjob),
        Resource("ModelDeployment", f"feed-{model}", namespace, deployment),
    ]


def rank_request(validation: pa.Table, candidates: int = 100, seed: int = 0) -> dict[str, Any]:
    """A realistic /rank body: one user and moment from the validation split, and
    `candidates` distinct posts as they were logged."""
    rng = np.random.default_rng(seed)
    rows = validation.to_pylist()
    anchor = rows[int(rng.integers(len(rows)))]
    seen: dict[Any, dict[str, Any]] = {}
    for i in rng.permutation(len(rows)):
        row = rows[int(i)]
        if row["item_id"] not in seen:
            seen[row["item_id"]] = {c: row[c] for c in ITEM_COLUMNS}
        if len(seen) == candidates:
            break
    return {
        "user": {c: anchor[c] for c in USER_COLUMNS},
        "context": {c: anchor[c] for c in CONTEXT_COLUMNS},
        "candidates": list(seen.values()),
        "requestId": "quickstart-1",
    }
