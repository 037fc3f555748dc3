"""A Docker-free Kubernetes test cluster: real control plane, kwok nodes, MinIO.

from recplane.devcluster import DevCluster, ensure_binaries
ensure_binaries()              # builds from the Go module proxy once, then cached
with DevCluster("/some/dir") as cluster:
    subprocess.run([cluster.kubectl, "get", "nodes"], env=cluster.env())
"""

from recplane.devcluster.binaries import cache_dir, ensure_binaries, find_binaries
from recplane.devcluster.cluster import ClusterStatus, DevCluster, ProcessStatus, default_state_dir
from recplane.devcluster.errors import DevClusterError

__all__ = [
    "ClusterStatus",
    "DevCluster",
    "DevClusterError",
    "ProcessStatus",
    "cache_dir",
    "default_state_dir",
    "ensure_binaries",
    "find_binaries",
]
