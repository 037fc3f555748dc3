"""The operator's permissions, written once: the Helm chart and the tests render these.

Least privilege: no wildcard verbs or resources; Secrets only by name (the store
Secret, `get` only); pods only read; children only created, patched (server-side
apply) and, where the operator retires them, deleted.

    from recplane.operator import rbac
    rbac.cluster_role()                      # ClusterRole for `operator run --all-namespaces`
    rbac.role("team-a")                      # Role for `operator run --namespace team-a`
    rbac.manifests("recplane-system")        # ServiceAccount + ClusterRole + ClusterRoleBinding
"""

from __future__ import annotations

from typing import Any

from recplane.api import GROUP, KINDS
from recplane.operator.peering import PEERING_GROUP, PEERING_NAME

Obj = dict[str, Any]

OPERATOR_NAME = "recplane-operator"
STORE_SECRET = "recplane-store"
_PLURALS = [k.plural for k in KINDS.values()]


def rules(store_secret: str = STORE_SECRET, peering: str = PEERING_NAME, clusterwide: bool = True) -> list[Obj]:
    """Every permission the operator uses, and nothing else."""
    peerings = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    return [
        # The four kinds: watched, read (upstream references), patched by kopf (finalizer, progress annotations).
        {"apiGroups": [GROUP], "resources": list(_PLURALS), "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{p}/status" for p in _PLURALS], "verbs": ["patch"]},
        # Owner references that block owner deletion need this where OwnerReferencesPermissionEnforcement is on.
        {"apiGroups": [GROUP], "resources": [f"{p}/finalizers" for p in _PLURALS], "verbs": ["update"]},
        # Children. Jobs are created and never changed (a new input is a new run); the rest is written
        # with server-side apply (create + patch).
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": ["batch"], "resources": ["jobs/finalizers"], "verbs": ["update"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": ["create", "patch"]},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["create", "patch"]},
        # Pods are only read: termination messages, image-pull errors, readiness.
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        # Only the store Secret, only to check it exists before starting pods that need it.
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [store_secret], "verbs": ["get"]},
        # Leader election: kopf peering.
        {"apiGroups": [PEERING_GROUP], "resources": [peerings], "verbs": ["list", "watch"]},
        {"apiGroups": [PEERING_GROUP], "resources": [peerings], "resourceNames": [peering], "verbs": ["get", "patch"]},
    ]


RULES = rules()
"""The rules with the default Secret and peering names."""


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": OPERATOR_NAME, "app.kubernetes.io/part-of": "recplane"}


def cluster_role(name: str = OPERATOR_NAME, store_secret: str = STORE_SECRET, peering: str = PEERING_NAME) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _labels()},
        "rules": rules(store_secret, peering, clusterwide=True),
    }


def role(
    namespace: str, name: str = OPERATOR_NAME, store_secret: str = STORE_SECRET, peering: str = PEERING_NAME
) -> Obj:
    """For an operator that serves one namespace (`operator run --namespace`)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
        "rules": rules(store_secret, peering, clusterwide=False),
    }


def service_account(namespace: str, name: str = OPERATOR_NAME) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
    }


def binding(namespace: str, name: str = OPERATOR_NAME, watched_namespace: str | None = None) -> Obj:
    """ClusterRoleBinding (all namespaces) or RoleBinding in `watched_namespace`."""
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    if watched_namespace is None:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": _labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [subject],
        }
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": watched_namespace, "labels": _labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }


def manifests(
    namespace: str,
    watched_namespace: str | None = None,
    name: str = OPERATOR_NAME,
    store_secret: str = STORE_SECRET,
    peering: str = PEERING_NAME,
) -> list[Obj]:
    """ServiceAccount in `namespace` plus the (Cluster)Role and its binding."""
    if watched_namespace is None:
        granted = cluster_role(name, store_secret, peering)
    else:
        granted = role(watched_namespace, name, store_secret, peering)
    return [service_account(namespace, name), granted, binding(namespace, name, watched_namespace)]
