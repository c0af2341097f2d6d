"""Reliability under faults: nothing lost when a worker dies mid-stream.

Each test starts its own broker and Redis: it kills or restarts workers and
consumer groups, which must not disturb the session's shared stack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from callguard.core.schema import AUDIT_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, start_redis
from tests.conftest import Worker, bootstrap, cli, env_for, start_test_broker
from tests.traffic import NUMBERS, DecisionCounter, load_stream_data, publish_intents

pytestmark = pytest.mark.e2e

TOTAL = 50_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    broker: Server = start_test_broker(tmp_path)
    redis_server: Server = start_redis(tmp_path)
    env = env_for(f"kafka://127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis_server.port}/0",
                  CALLGUARD_APP_ID="callguard-reliability")  # fmt: skip
    # the intents are acme's: a clear result loaded for every client ('*') is nobody's check
    load_stream_data(env, tmp_path, "--client", "acme")
    try:
        yield env
    finally:
        redis_server.stop()
        broker.stop()


async def test_kill_9_mid_stream_loses_no_intent(stack: dict[str, str], tmp_path: Path) -> None:
    broker_url = stack["CALLGUARD_BROKER"]
    worker = Worker(stack, tmp_path / "worker.log").start()
    counter = DecisionCounter(broker_url)
    await counter.consumer.start()
    try:
        await publish_intents(broker_url, TOTAL)
        await counter.until(TOTAL // 4, timeout=120)
        assert len(counter.first) < TOTAL, "the worker finished before it could be killed"
        worker.kill()
        decided_at_kill = len(counter.first)

        restarted = Worker(stack, tmp_path / "worker.log").start()
        try:
            await counter.until(TOTAL, timeout=180)
            await asyncio.sleep(1.0)
            await counter.poll()
        finally:
            restarted.stop()
    finally:
        await counter.consumer.stop()
        worker.stop()
    missing = TOTAL - len(counter.first)
    print(
        f"\nkill -9 after {decided_at_kill:,} of {TOTAL:,} decisions: missing {missing}, "
        f"duplicates {counter.duplicates:,}, conflicting duplicates {len(counter.conflicts)}"
    )
    assert missing == 0
    assert counter.conflicts == []

    # the audit trail survived the crash as one unbroken chain per partition...
    verified = cli(stack, "audit", "verify")
    print(verified.stdout.splitlines()[-1])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout
    # an export verifies the same, and an edit in it is found at the next record of its partition
    export = tmp_path / "audit.jsonl"
    assert cli(stack, "audit", "export", str(export)).returncode == 0
    assert cli(stack, "audit", "verify", "--file", str(export)).returncode == 0
    lines = export.read_bytes().splitlines()
    entry = orjson.loads(lines[10])
    edited = entry["value"].replace('"retryable":false', '"retryable":true', 1)  # a one-word edit
    assert edited != entry["value"]
    lines[10] = orjson.dumps({**entry, "value": edited})
    export.write_bytes(b"\n".join(lines) + b"\n")
    tampered_file = cli(stack, "audit", "verify", "--file", str(export))
    assert tampered_file.returncode == 1
    assert f"PROBLEM partition {entry['partition']} offset {entry['offset'] + 1}: broken_link" in tampered_file.stdout
    # ...and a record slipped in afterwards is found, with its position
    forger = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url))
    await forger.start()
    forged = await forger.send_and_wait(
        AUDIT_TOPIC, b'{"intent_id": "r-1", "decision": "allow", "chain": {"prev": "0"}}', partition=0
    )
    await forger.stop()
    tampered = cli(stack, "audit", "verify")
    assert tampered.returncode == 1
    assert f"PROBLEM partition 0 offset {forged.offset}: broken_link" in tampered.stdout
    denied = sum(1 for verdict, _ in counter.first.values() if verdict == "deny")
    assert denied > TOTAL * 0.2  # opposed and never-checked numbers really were denied


async def test_two_workers_share_the_partitions_and_decide_every_intent_once(
    stack: dict[str, str], tmp_path: Path
) -> None:
    """Scale-out in steady state: two workers of one consumer group split the
    intents' partitions between them, both decide, and every intent gets
    exactly one decision (one worker's share plus the other's is the whole)."""
    broker_url = stack["CALLGUARD_BROKER"]
    workers = [Worker(stack, tmp_path / f"w{n}.log").start(wait=False) for n in range(2)]
    counter = DecisionCounter(broker_url)
    try:
        shares: list[set[int]] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until the group settled: both own partitions, none twice
            try:
                answers = [worker.health() for worker in workers]
            except OSError:
                answers = []
            shares = [set(body["assigned_partitions"]) for status, body in answers if status == 200]
            if len(shares) == 2 and all(shares) and not shares[0] & shares[1] and len(shares[0] | shares[1]) == 6:
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError(f"the two workers never shared the 6 partitions: {shares}")
        total = 20_000
        await counter.consumer.start()
        await publish_intents(broker_url, total, prefix="s")
        await counter.until(total, timeout=120)
        await asyncio.sleep(2.0)  # anything decided twice would be here by now
        await counter.poll()
        decided = [worker.health()[1]["decisions"] for worker in workers]
        after = [set(worker.health()[1]["assigned_partitions"]) for worker in workers]
    finally:
        await counter.consumer.stop()
        for worker in workers:
            worker.stop()
    print(
        f"\ntwo workers, partitions {sorted(shares[0])} and {sorted(shares[1])}: decisions {decided[0]:,} + {decided[1]:,}"
    )
    assert after == shares, "the group rebalanced during the test"
    assert len(counter.first) == total
    assert counter.duplicates == 0
    assert all(decided) and sum(decided) == total


async def test_a_killed_workers_partitions_are_taken_over_quickly(stack: dict[str, str], tmp_path: Path) -> None:
    """Two workers share the partitions; one is killed -9 under load. With the
    product's default group timeouts the survivor must decide for the dead
    worker's partitions again within 15 s."""
    env = {k: v for k, v in stack.items() if k != "CALLGUARD_SESSION_TIMEOUT"}  # the product default
    broker_url = env["CALLGUARD_BROKER"]
    first = Worker(env, tmp_path / "w1.log").start()
    second = Worker(env, tmp_path / "w2.log").start(wait=False)
    audit = AIOKafkaConsumer(AUDIT_TOPIC, bootstrap_servers=bootstrap(broker_url), auto_offset_reset="latest")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both members own partitions
            try:
                if second.health()[0] == 200 and first.health()[0] == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.3)
        victim = set(first.health()[1]["assigned_partitions"])
        assert victim and set(second.health()[1]["assigned_partitions"]), "the group never shared the partitions"
        await audit.start()
        load = asyncio.create_task(steady_intents(broker_url, seconds=40, rate=300))
        await asyncio.sleep(3)
        first.kill()
        killed_at = time.time()
        takeover = None
        while takeover is None and time.time() - killed_at < 40:
            for records in (await audit.getmany(timeout_ms=300)).values():
                for record in records:
                    entry = orjson.loads(record.value)
                    if entry["source"]["partition"] in victim and record.timestamp / 1000 > killed_at:
                        takeover = record.timestamp / 1000 - killed_at
                        break
        load.cancel()
    finally:
        await audit.stop()
        first.stop()
        second.stop()
    print(
        f"\ntakeover of partitions {sorted(victim)} after kill -9: {takeover if takeover is None else round(takeover, 1)} s"
    )
    assert takeover is not None and takeover < 15


async def steady_intents(broker_url: str, seconds: float, rate: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), linger_ms=5)
    await producer.start()
    try:
        started, n = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            for _ in range(rate // 20):
                callee = f"+39349{n % NUMBERS:07d}"
                value = {"intent_id": f"t-{n}", "callee": callee, "operator_id": "r-op", "client_id": "acme"}
                await producer.send(INTENTS_TOPIC, orjson.dumps(value), key=str(n).encode())
                n += 1
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()


# --- the idempotent producer: a batch sent again after a broker failure is written once ---


def test_worker_without_an_idempotent_producer_says_so(tmp_path: Path, embedded) -> None:
    """Tansu refuses InitProducerId. ``auto`` runs on with a warning that names
    the risk to the audit chain; ``true`` refuses to start, in one line. (The
    property itself, no batch written twice when Apache Kafka is killed, is
    test_kafka_broker.py's broker-kill test.)"""
    from callguard.dev.embedded import start_broker

    tansu = start_broker(tmp_path)
    try:
        env = env_for(f"kafka://127.0.0.1:{tansu.port}", embedded.redis_url, CALLGUARD_APP_ID="callguard-idempotence")
        strict = Worker({**env, "CALLGUARD_PRODUCER_IDEMPOTENCE": "true"}, tmp_path / "strict.log").start(wait=False)
        assert strict.process is not None
        assert strict.process.wait(60) == 2, strict.log_tail()
        assert "the broker refuses an idempotent producer" in strict.log_tail()
        worker = Worker(env, tmp_path / "auto.log").start()
        try:
            log = worker.log_tail(200)
            assert "refuses an idempotent producer" in log and "audit verify" in log, log
        finally:
            worker.stop()
    finally:
        tansu.stop()
