"""kopf peering (leader election): its CRDs and the peering object the replicas share.

Every replica of the operator registers in the peering object with a priority;
only the highest-priority live replica handles resources, the others pause until
it stops renewing its entry. kopf does not install these CRDs itself; the chart
(and the tests) install what `manifests()` returns.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

PEERING_GROUP = "kopf.dev"
PEERING_NAME = "recplane"


def _crd(kind: str, plural: str, scope: str) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{PEERING_GROUP}", "labels": {"app.kubernetes.io/part-of": "recplane"}},
        "spec": {
            "group": PEERING_GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    # No status subresource: kopf writes its peers into .status with a plain patch.
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                    "additionalPrinterColumns": [
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                    ],
                }
            ],
        },
    }


def crds() -> list[Obj]:
    return [
        _crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        _crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]


def peering_object(name: str = PEERING_NAME, namespace: str | None = None) -> Obj:
    """ClusterKopfPeering (operator serving all namespaces) or KopfPeering in `namespace`."""
    if namespace is None:
        return {"apiVersion": f"{PEERING_GROUP}/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    return {
        "apiVersion": f"{PEERING_GROUP}/v1",
        "kind": "KopfPeering",
        "metadata": {"name": name, "namespace": namespace},
    }


def manifests(name: str = PEERING_NAME, namespace: str | None = None) -> list[Obj]:
    return [*crds(), peering_object(name, namespace)]
