"""References between resources: chains, cycles, sensitive features."""

from __future__ import annotations

from recplane.operator.artifacts import StoreRef
from recplane.operator.refs import Ref, describe_chain, find_cycle, forbidden_features, upstream_ref


def parse(uri: str) -> StoreRef | None:
    prefix = "s3://recplane/"
    if not uri.startswith(prefix):
        return None
    ns, kind, name, *rest = uri[len(prefix) :].strip("/").split("/")
    kinds = {"sampleset": "SampleSet", "featureset": "FeatureSet", "trainjob": "TrainJob"}
    return StoreRef(ns, kinds[kind], name, rest[0] if rest else None)


def test_each_kind_names_what_it_consumes(make) -> None:
    assert upstream_ref(make("FeatureSet", "f")) == Ref("SampleSet", "events", None, "spec.sampleSetRef")
    assert upstream_ref(make("TrainJob", "t")) == Ref("FeatureSet", "features", None, "spec.featureSetRef")
    md = make("ModelDeployment", "m", spec={"model": {"trainJobRef": {"name": "t", "version": "v9"}}})
    assert upstream_ref(md) == Ref("TrainJob", "t", "v9", "spec.model.trainJobRef")
    by_uri = make("ModelDeployment", "m", spec={"model": {"uri": "s3://recplane/team-a/trainjob/t/v3/"}})
    assert upstream_ref(by_uri, parse) == Ref("TrainJob", "t", "v3", "spec.model.uri")
    assert upstream_ref(make("SampleSet", "s")) is None


def test_output_of_another_namespace_is_plain_input(make) -> None:
    ss = make("SampleSet", "s", spec={"source": {"format": "parquet", "uri": "s3://recplane/team-b/sampleset/x/"}})
    assert upstream_ref(ss, parse) is None


def test_samplesets_reading_each_others_output_form_a_cycle(make) -> None:
    a = make("SampleSet", "a", spec={"source": {"format": "parquet", "uri": "s3://recplane/team-a/sampleset/b/"}})
    b = make("SampleSet", "b", spec={"source": {"format": "parquet", "uri": "s3://recplane/team-a/sampleset/a/"}})
    objs = {("SampleSet", "a"): a, ("SampleSet", "b"): b}
    cycle = find_cycle(a, lambda k, n: objs.get((k, n)), parse)
    assert cycle == [("SampleSet", "a"), ("SampleSet", "b"), ("SampleSet", "a")]
    assert describe_chain(cycle) == "SampleSet 'a' -> SampleSet 'b' -> SampleSet 'a'"


def test_a_chain_without_a_loop_is_no_cycle(make) -> None:
    tj = make("TrainJob", "t")
    fs = make("FeatureSet", "features")
    objs = {("FeatureSet", "features"): fs}
    assert find_cycle(tj, lambda k, n: objs.get((k, n)), parse) is None


def test_a_sensitive_feature_is_refused_outside_its_allowed_namespaces(make) -> None:
    spec = make("FeatureSet", "f")["spec"]
    spec["features"].append(
        {
            "name": "income",
            "group": "reader",
            "type": "dense",
            "columns": ["income"],
            "transform": {"type": "log1p"},
            "sensitive": True,
            "allowedNamespaces": ["finance"],
        }
    )
    assert forbidden_features(spec, "team-a") == [("income", ["finance"])]
    assert forbidden_features(spec, "finance") == []
