"""Ready-made feature catalogs for the synthetic shapes (examples, quickstart, tests, benchmarks)."""

from __future__ import annotations

from typing import Any

from recplane.api.featureset import Feature

from .synthetic import CRITEO_DENSE, CRITEO_SPARSE


def _feature(name: str, group: str, type_: str, columns: list[str], transform: dict[str, Any], **extra: Any) -> Feature:
    return Feature.model_validate(
        {"name": name, "group": group, "type": type_, "columns": columns, "transform": transform, **extra}
    )


def feed_features() -> list[Feature]:
    """The feed catalog: ids, reader, author, context, environment and material features.

    Covers every transform: vocabularies (with an OOV bucket for rare posts), a
    multi-hot sequence, bucketize, quantiles, a cross, log1p and standardize.
    """
    vocab = {"type": "vocabulary"}
    return [
        _feature("user_id", "id", "sparse", ["user_id"], vocab),
        _feature("item_id", "id", "sparse", ["item_id"], {"type": "vocabulary", "minCount": 2}),
        _feature("author_id", "author", "sparse", ["author_id"], vocab),
        _feature("topic", "material", "sparse", ["topic"], vocab),
        _feature("recent_topics", "reader", "multi_hot", ["recent_topics"], vocab, pooling="mean"),
        _feature("device", "environment", "sparse", ["device"], vocab),
        _feature("network", "environment", "sparse", ["network"], vocab),
        _feature("hour", "context", "sparse", ["hour"], {"type": "hash", "buckets": 24}),
        _feature(
            "position", "context", "sparse", ["position"], {"type": "bucketize", "boundaries": [1, 2, 3, 5, 8, 13, 21]}
        ),
        _feature("referrer", "context", "sparse", ["referrer"], vocab),
        _feature("item_age_bucket", "material", "sparse", ["item_age_hours"], {"type": "quantile", "numQuantiles": 16}),
        _feature("topic_x_hour", "context", "sparse", ["topic", "hour"], {"type": "cross", "buckets": 4096}),
        _feature("item_age_hours", "material", "dense", ["item_age_hours"], {"type": "log1p"}),
        _feature("author_followers", "author", "dense", ["author_followers"], {"type": "log1p"}),
        _feature("user_activity", "reader", "dense", ["user_activity"], {"type": "standardize"}),
    ]


def criteo_features(min_count: int = 2, hash_buckets: int | None = None) -> list[Feature]:
    """The Criteo-shaped catalog: c1..c26 (vocabulary with `min_count`, or hashed into `hash_buckets`)
    and i1..i13 (log1p)."""
    sparse = (
        {"type": "hash", "buckets": hash_buckets} if hash_buckets else {"type": "vocabulary", "minCount": min_count}
    )
    return [_feature(c, "material", "sparse", [c], sparse) for c in CRITEO_SPARSE] + [
        _feature(c, "context", "dense", [c], {"type": "log1p"}) for c in CRITEO_DENSE
    ]
