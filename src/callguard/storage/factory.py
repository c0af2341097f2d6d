"""The stores for a URL: one Redis, or a Redis Cluster.

Here rather than in :class:`~callguard.storage.stores.Stores`: the cluster's
stores are a subclass of the single node's, so a constructor on the base that
returned the subclass made the two modules import each other.
"""

from __future__ import annotations

from callguard.storage.cluster import ClusterStores
from callguard.storage.connection import connect, is_cluster_url
from callguard.storage.stores import Stores


def open_stores(
    url: str, timeout: float = 1.0, replica_url: str | None = None, cluster_replicas: bool = False
) -> Stores:
    """The stores on ``url`` (:func:`callguard.storage.connection.connect`),
    connecting lazily; ``timeout`` bounds every socket operation so that a
    slow or dead Redis turns into ``lookup_unavailable``, not a stalled
    stream. A ``redis+cluster://`` URL gives
    :class:`~callguard.storage.cluster.ClusterStores`. ``replica_url``: a
    replica of ``url`` that answers the batch lookups; ``cluster_replicas``:
    on a cluster, each slot's replicas answer them."""
    if is_cluster_url(url):
        if replica_url:  # each node's replicas belong to the cluster, not to one URL
            raise ValueError("CALLGUARD_REDIS_REPLICA_URL does not apply to a Redis Cluster")
        replicas = connect(url, timeout, replicas=True) if cluster_replicas else None
        return ClusterStores(connect(url, timeout), url, timeout, replicas)
    if cluster_replicas:
        raise ValueError("cluster_replicas needs a redis+cluster:// URL")
    replica = connect(replica_url, timeout) if replica_url else None
    return Stores(connect(url, timeout), url, replica, timeout)
