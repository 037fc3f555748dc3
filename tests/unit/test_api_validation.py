"""The models refuse what the API server refuses, with messages naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.api import KINDS, kind_of, parse_spec
from recplane.api.resource import ResourceError, load_resources, parse_resource
from recplane.api.sampleset import DEFAULT_FOLLOW_INTERVAL

ROOT = Path(__file__).resolve().parents[2]


def _tj(**overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {"featureSetRef": {"name": "feed"}, "model": {"type": "deepfm"}}
    spec.update(overrides)
    return spec


def test_defaults_are_filled_once_from_the_models() -> None:
    spec = parse_spec("TrainJob", _tj()).to_wire()  # type: ignore[attr-defined]
    assert spec["distributed"] == {"workers": 1, "procsPerWorker": 2, "backend": "gloo", "sharding": "auto"}
    assert spec["optimization"]["embeddingPrecision"] == "fp32"


@pytest.mark.parametrize(
    ("kind", "spec", "fragment"),
    [
        ("TrainJob", _tj(model={"type": "xgboost"}), "model.type"),
        ("TrainJob", _tj(distributed={"workers": 0}), "distributed.workers"),
        ("TrainJob", _tj(distributed={"sharding": "row_wise"}), "sharding row_wise needs GPUs"),
        ("TrainJob", _tj(distributed={"backend": "nccl"}), "resources.gpu"),
        ("TrainJob", _tj(surprise=True), "surprise"),
        ("ModelDeployment", {"model": {"uri": "s3://m/v1"}, "canary": {"weight": 10}}, "canary.version"),
        (
            "ModelDeployment",
            {"model": {"trainJobRef": {"name": "r"}, "follow": "pinned"}, "canary": {"weight": 10}},
            "canary.weight needs canary.version when the model is pinned",
        ),
        (
            "ModelDeployment",
            {"model": {"trainJobRef": {"name": "r", "version": "v1"}}, "canary": {"weight": 10}},
            "canary.weight needs canary.version when the model is pinned",
        ),
        (
            "ModelDeployment",
            {"model": {"trainJobRef": {"name": "r"}}, "canary": {"weight": 10, "analysis": "ten minutes"}},
            "canary.analysis",
        ),
        (
            "ModelDeployment",
            {"model": {"uri": "s3://m/v1"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "autoscaling.minReplicas",
        ),
        ("ModelDeployment", {"model": {}}, "model.trainJobRef and model.uri"),
        ("SampleSet", {"source": {"format": "parquet"}}, "source.uri is required"),
        ("SampleSet", {"source": {"format": "synthetic", "uri": "/data"}}, "source.uri must be omitted"),
        (
            "SampleSet",
            {"source": {"format": "parquet", "uri": "s3://logs/feed/", "followInterval": "1m"}},
            "source.followInterval is only used when source.follow is true",
        ),
        (
            "SampleSet",
            {"source": {"format": "parquet", "uri": "s3://logs/feed/", "follow": True, "followInterval": "a minute"}},
            "source.followInterval",
        ),
        (
            "FeatureSet",
            {
                "sampleSetRef": {"name": "s"},
                "features": [
                    {
                        "name": "age",
                        "group": "reader",
                        "type": "dense",
                        "columns": ["age"],
                        "transform": {"type": "hash", "buckets": 10},
                    }
                ],
            },
            "transform.type does not fit the feature type",
        ),
        (
            "FeatureSet",
            {
                "sampleSetRef": {"name": "s"},
                "features": [
                    {
                        "name": "u",
                        "group": "id",
                        "type": "sparse",
                        "columns": ["u"],
                        "transform": {"type": "hash", "buckets": 10},
                    },
                    {
                        "name": "u",
                        "group": "id",
                        "type": "sparse",
                        "columns": ["u"],
                        "transform": {"type": "hash", "buckets": 10},
                    },
                ],
            },
            "must be unique",
        ),
        (
            "FeatureSet",
            {
                "sampleSetRef": {"name": "s"},
                "features": [
                    {
                        "name": "x",
                        "group": "context",
                        "type": "sparse",
                        "columns": ["x"],
                        "transform": {"type": "bucketize", "boundaries": [3, 1]},
                    }
                ],
            },
            "sorted in ascending order",
        ),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(kind: str, spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(ResourceError) as err:
        parse_resource({"apiVersion": "recplane.io/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec})
    assert fragment in str(err.value)
    assert f"{kind}/x" in str(err.value)


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"trainJobRef": {"name": "r"}}, "canary": {"weight": 10}},
        {"model": {"trainJobRef": {"name": "r"}, "follow": "latest"}, "canary": {"weight": 10, "analysis": "1h30m"}},
        {"model": {"uri": "s3://m/v1"}, "canary": {"version": "v2", "weight": 10}},
        {"model": {"trainJobRef": {"name": "r"}, "follow": "pinned"}, "canary": {"weight": 0}},
    ],
    ids=["promoted", "latest", "fixed-version", "no-weight"],
)
def test_a_canary_needs_a_version_only_when_the_model_is_pinned(spec: dict[str, object]) -> None:
    resource = parse_resource(
        {"apiVersion": "recplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "x"}, "spec": spec}
    )
    canary = resource.spec.to_wire()["canary"]  # type: ignore[attr-defined]
    assert canary["analysis"] == spec["canary"].get("analysis", "10m")  # type: ignore[attr-defined]


def test_a_followed_source_looks_for_new_files_every_minute_unless_told_otherwise() -> None:
    def source(**fields: object) -> dict[str, object]:
        spec = {"source": {"format": "parquet", "uri": "s3://logs/feed/", **fields}}
        resource = parse_resource(
            {"apiVersion": "recplane.io/v1alpha1", "kind": "SampleSet", "metadata": {"name": "x"}, "spec": spec}
        )
        return resource.spec.to_wire()["source"]  # type: ignore[attr-defined,no-any-return]

    # No schema default: a SampleSet that does not follow carries no interval (and keeps its version hashes).
    assert "followInterval" not in source(follow=True) and "followInterval" not in source()
    assert source(follow=True, followInterval="1h30m")["followInterval"] == "1h30m"
    assert DEFAULT_FOLLOW_INTERVAL == "1m"


def test_kinds_are_found_by_every_name_kubectl_accepts() -> None:
    for k in KINDS.values():
        for alias in (k.kind, k.plural, k.singular, k.short, k.kind.upper()):
            assert kind_of(alias) is k
    with pytest.raises(KeyError, match="expected one of"):
        kind_of("pipelines")


def test_examples_are_valid_resources() -> None:
    resources = load_resources([ROOT / "examples"])
    assert {r.kind for r in resources} == set(KINDS)


def test_wrong_api_version_is_named() -> None:
    with pytest.raises(ResourceError, match=r"apiVersion must be recplane\.io/v1alpha1"):
        parse_resource({"apiVersion": "v1", "kind": "TrainJob", "metadata": {"name": "x"}, "spec": _tj()})
