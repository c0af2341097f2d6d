"""Batch lookups on a Redis replica (``CALLGUARD_REDIS_REPLICA_URL``), with
a real primary and replica started here: lookups go to the replica while it
is linked to its primary, to the primary when it is down or cut off (a cut-off
replica would miss every opt-out since), and nothing is ever written to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime

import pytest
import redis

from callguard.config import ConfigError, load_settings
from callguard.core.facts import Operator, OptOut
from callguard.dev.embedded import Server, start_redis, start_redis_replica, wait_replica_synced
from callguard.storage.factory import open_stores
from callguard.storage.stores import REPLICA_PAUSE, LookupUnavailable, Query, Stores

NUMBER = "+393471234567"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("replica")
    primary = start_redis(workdir)
    replica = start_redis_replica(workdir, primary.port)
    try:
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
async def stores(servers: tuple[Server, Server]) -> AsyncIterator[Stores]:
    primary, replica = servers
    stores = open_stores(f"redis://127.0.0.1:{primary.port}/0", 1.0, f"redis://127.0.0.1:{replica.port}/0")
    await stores.add_register_results([(NUMBER, True, None)], datetime.now(UTC).date(), "*")
    await stores.replace_operators([Operator("op", "active", date(2024, 1, 1), date(2030, 1, 1))], "v1")
    await asyncio.sleep(0.2)  # replicated
    yield stores
    await stores.close()


def lookups(port: int) -> int:
    """Script calls a Redis server has answered."""
    with redis.Redis(port=port) as client:
        stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_lookups_go_to_the_replica(servers: tuple[Server, Server], stores: Stores) -> None:
    primary, replica = servers
    before = lookups(primary.port), lookups(replica.port)
    facts = (await stores.lookup([Query(NUMBER, "acme", "op")]))[0]
    assert stores.replica_state == "in_use"
    assert facts.register[0].opposed and facts.operator is not None and facts.operator.operator_id == "op"
    # (a first call on a server counts twice: NOSCRIPT, then the call after SCRIPT LOAD)
    assert lookups(primary.port) == before[0] and lookups(replica.port) > before[1]
    # what the guard writes goes to the primary and reaches the replica
    await stores.add_optouts([(NUMBER, OptOut("acme", date(2026, 1, 1)))])
    await asyncio.sleep(0.2)
    facts = (await stores.lookup([Query(NUMBER, "acme", "op")]))[0]
    assert [o.client_id for o in facts.optouts] == ["acme"]


async def test_a_replica_cut_off_from_its_primary_is_not_read(
    servers: tuple[Server, Server], stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica = servers
    with redis.Redis(port=replica.port) as client:
        client.execute_command("REPLICAOF", "127.0.0.1", "1")  # nothing listens there: the link is down
    try:
        await stores.add_optouts([(NUMBER, OptOut("*", date(2026, 2, 1)))])  # the replica never sees it
        stores._replica_checked_at = -1.0  # the link check is due (it runs at most once a second)
        before = lookups(primary.port), lookups(replica.port)
        with caplog.at_level(logging.WARNING, logger="callguard.stores"):
            facts = (await stores.lookup([Query(NUMBER, "acme", "op")]))[0]
            await stores.lookup([Query(NUMBER, "acme", "op")])
        assert "*" in [o.client_id for o in facts.optouts]  # answered by the primary
        assert stores.replica_state == "failing"
        assert lookups(primary.port) >= before[0] + 2 and lookups(replica.port) == before[1]
        assert [r.getMessage() for r in caplog.records].count(
            "redis replica failed (replica link to its primary is connect): lookups go to the primary, the replica"
            f" is tried again every "
            f"{REPLICA_PAUSE:.0f}s"
        ) == 1  # said once, not per batch
    finally:
        with redis.Redis(port=replica.port) as client:
            client.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        wait_replica_synced(replica.port)


async def test_a_replica_down_leaves_the_lookups_to_the_primary(servers: tuple[Server, Server]) -> None:
    primary, _ = servers
    stores = open_stores(f"redis://127.0.0.1:{primary.port}/0", 0.5, "redis://127.0.0.1:1/0")
    try:
        await stores.add_register_results([(NUMBER, False, None)], datetime.now(UTC).date(), "beta")
        facts = (await stores.lookup([Query(NUMBER, "beta", "op")]))[0]
        assert [r.client_id for r in facts.register] == ["*", "beta"]
    finally:
        await stores.close()
    both_down = open_stores("redis://127.0.0.1:1/0", 0.5, "redis://127.0.0.1:1/0")
    with pytest.raises(LookupUnavailable):  # then the guard denies lookup_unavailable: it fails closed
        await both_down.lookup([Query(NUMBER, "beta", "op")])
    await both_down.close()


def test_the_replica_url_is_checked() -> None:
    settings = load_settings(environ={"CALLGUARD_REDIS_REPLICA_URL": "redis://replica:6379/0"})
    assert settings.redis_replica_url == "redis://replica:6379/0"
    with pytest.raises(ConfigError, match="CALLGUARD_REDIS_REPLICA_URL: expected a redis://"):
        load_settings(environ={"CALLGUARD_REDIS_REPLICA_URL": "http://replica"})
    with pytest.raises(ConfigError, match="a Redis Cluster reads from its own replicas"):
        load_settings(
            environ={
                "CALLGUARD_REDIS_URL": "redis+cluster://a:6379",
                "CALLGUARD_REDIS_REPLICA_URL": "redis://replica:6379/0",
            }
        )


def test_cluster_reads_are_checked() -> None:
    cluster = {"CALLGUARD_REDIS_URL": "redis+cluster://a:6379"}
    assert load_settings(environ=cluster).redis_cluster_reads == "primaries"
    assert load_settings(environ={**cluster, "CALLGUARD_REDIS_CLUSTER_READS": "replicas"}).redis_cluster_reads == (
        "replicas"
    )
    with pytest.raises(ConfigError, match="CALLGUARD_REDIS_CLUSTER_READS: expected primaries or replicas"):
        load_settings(environ={**cluster, "CALLGUARD_REDIS_CLUSTER_READS": "replica"})
    with pytest.raises(ConfigError, match=r"needs a redis\+cluster:// URL; for one Redis, name its replica"):
        load_settings(environ={"CALLGUARD_REDIS_CLUSTER_READS": "replicas"})
    with pytest.raises(ConfigError, match="set CALLGUARD_REDIS_CLUSTER_READS=replicas"):
        load_settings(environ={**cluster, "CALLGUARD_REDIS_REPLICA_URL": "redis://replica:6379/0"})


def test_stores_have_a_replica_only_when_given_its_url() -> None:
    stores = open_stores("redis://127.0.0.1:1/0", 1.0, "redis://127.0.0.1:2/0")
    assert stores.replica is not None
    assert stores.replica.connection_pool.connection_kwargs["port"] == 2
    assert open_stores("redis://127.0.0.1:1/0").replica_state is None
