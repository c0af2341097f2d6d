"""Every Redis client callguard opens, built by one function.

``connect(url)`` gives a single-node client for ``redis://``, ``rediss://``
(TLS) and ``unix://`` URLs, and a cluster client for ``redis+cluster://``
(``rediss+cluster://`` for TLS; several ``HOST:PORT`` separated by commas,
user and password as in ``redis://``, e.g. a Redis ACL user). Whichever it
builds packs commands with hiredis (:func:`hiredis_packing`): the batch
scripts send thousands of arguments, and one builder that forgot it made
those calls several times slower.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import LoadBalancingStrategy
from redis.exceptions import DataError


@lru_cache(maxsize=8)
def hiredis_packing(base: type[Any]) -> type[Any]:
    """``base`` (TCP, TLS or Unix socket) packing commands with hiredis.

    redis-py's asyncio connection packs a command in Python and re-joins its
    buffer for every argument, which grows quadratic-like with the argument
    count, where ``hiredis.pack_command`` (what its synchronous connection
    uses, ``HiredisRespSerializer``) packs the same bytes in C.
    Written out rather than calling ``HiredisRespSerializer.pack``: before
    redis-py 8 (checked 5.0-7.0) it refuses the ``bytearray`` and
    ``memoryview`` values the Python packer takes, and callguard accepts
    ``redis>=5``.
    """

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # a command name may hold words, e.g. "CONFIG GET"
            args = (*args[0].encode().split(), *args[1:])
        args = tuple(bytes(arg) if isinstance(arg, bytearray | memoryview) else arg for arg in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # what redis-py's encoder raises for an unsupported value
            raise DataError(str(exc)) from exc

    return type(f"HiredisPacking{base.__name__}", (base,), {"pack_command": pack_command})


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+cluster")


class ClusterClient(RedisCluster):
    """redis-py's cluster client packing with hiredis, and routing
    ``EVALSHA_RO`` by its key as it routes ``EVALSHA``; for other commands
    with keys in their arguments it asks the server (``COMMAND GETKEYS``,
    one round trip per command)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # every node, the startup ones and those the slot map names later,
        # takes its connection class from these settings
        settings = self.nodes_manager.connection_kwargs
        settings["connection_class"] = hiredis_packing(settings["connection_class"])
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = settings["connection_class"]

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command == "EVALSHA_RO" and len(args) >= 3 and int(args[1]) == 1:
            return int(self.keyslot(args[2]))
        return int(await super()._determine_slot(command, *args))


def connect(url: str, timeout: float, decode_responses: bool = True, replicas: bool = False) -> Any:
    """A client for ``url`` (see the module docstring); ``timeout`` bounds every
    socket operation, so that a slow or dead Redis turns into an error, not a
    stalled stream. ``replicas`` (a cluster only): read commands go to each
    slot's replicas. Nothing connects before the first command."""
    if not is_cluster_url(url):
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=decode_responses,
            health_check_interval=0,
        )
        pool = client.connection_pool
        pool.connection_class = hiredis_packing(cast(Any, pool.connection_class))
        return client
    parts = urlsplit(url)
    nodes = []
    for host in parts.netloc.rpartition("@")[2].split(","):
        name, _, port = host.rpartition(":")
        nodes.append(ClusterNode(name or "127.0.0.1", int(port or 6379)))
    return ClusterClient(
        startup_nodes=nodes,
        load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS if replicas else None,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss+cluster",
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode_responses,
    )


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
