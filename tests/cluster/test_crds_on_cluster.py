"""The generated CRDs on a real API server: examples apply, bad specs are refused by the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NS = "crd-tests"


@pytest.fixture(scope="module")
def crds_installed(cluster: Any, kubectl: Any) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=recplane")
    kubectl("create", "namespace", NS, check=False)


def _apply(kubectl: Any, doc: dict[str, Any]) -> Any:
    return kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(doc), check=False)


def _tj(spec_overrides: dict[str, Any], name: str = "bad") -> dict[str, Any]:
    spec: dict[str, Any] = {"featureSetRef": {"name": "feed"}, "model": {"type": "deepfm"}}
    spec.update(spec_overrides)
    return {"apiVersion": "recplane.io/v1alpha1", "kind": "TrainJob", "metadata": {"name": name}, "spec": spec}


def test_examples_apply_and_list_under_the_recplane_category(crds_installed: None, kubectl: Any) -> None:
    kubectl("apply", "-n", NS, "-f", str(ROOT / "examples"))
    out = kubectl("get", "recplane", "-n", NS).stdout
    for name in (
        "sampleset.recplane.io/feed-events",
        "featureset.recplane.io/feed-features",
        "trainjob.recplane.io/feed-deepfm",
        "modeldeployment.recplane.io/feed-ranker",
    ):
        assert name in out
    for column in ("PHASE", "READY", "VERSION", "AGE"):
        assert column in out
    tj = kubectl("get", "tj", "-n", NS).stdout
    assert "MODEL" in tj and "deepfm" in tj and "AUC" in tj


def test_the_server_fills_defaults_from_the_models(crds_installed: None, kubectl: Any) -> None:
    kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "trainjob.yaml"))
    obj = json.loads(kubectl("get", "tj", "feed-deepfm", "-n", NS, "-o", "json").stdout)
    assert obj["spec"]["maxRestarts"] == 3
    assert obj["spec"]["distributed"]["backend"] == "gloo"
    assert obj["spec"]["optimization"]["embeddingPrecision"] == "fp32"


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        (_tj({"model": {"type": "xgboost"}}), ["spec.model.type", "Unsupported value", "deepfm"]),
        (_tj({"distributed": {"workers": -1}}), ["spec.distributed.workers", "should be greater than or equal to 1"]),
        (_tj({"distributed": {"sharding": "row_wise"}}), ["spec.distributed.sharding", "row_wise needs GPUs"]),
        (_tj({"surprise": 1}), ['unknown field "spec.surprise"']),
        (
            {
                "apiVersion": "recplane.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "bad"},
                "spec": {"model": {"uri": "s3://models/v1"}, "canary": {"weight": 20}},
            },
            ["spec.canary.weight", "canary.weight needs canary.version"],
        ),
        (
            {
                "apiVersion": "recplane.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "bad"},
                "spec": {"model": {"uri": "s3://models/v1"}, "autoscaling": {"minReplicas": 6, "maxReplicas": 2}},
            },
            ["spec.autoscaling.minReplicas", "must not exceed"],
        ),
        (
            {
                "apiVersion": "recplane.io/v1alpha1",
                "kind": "SampleSet",
                "metadata": {"name": "bad"},
                "spec": {"source": {"format": "csv"}},
            },
            ["spec.source.uri", "required unless source.format is synthetic"],
        ),
    ],
    ids=["enum", "negative-workers", "row-wise-on-cpu", "unknown-field", "canary-weight", "min-max", "missing-uri"],
)
def test_invalid_resources_are_refused_naming_the_field(
    crds_installed: None, kubectl: Any, doc: dict[str, Any], fragments: list[str]
) -> None:
    result = _apply(kubectl, doc)
    assert result.returncode != 0, f"the API server accepted an invalid {doc['kind']}"
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
