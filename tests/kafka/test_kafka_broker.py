"""What only a real broker shows: Apache Kafka killed and restarted on its log,
the group's lag as Kafka's own consumer-group command reports it, and a killed
worker's partitions taken over, with and without static group membership.

These tests need Apache Kafka (Tansu keeps nothing on disk and has no
consumer-group tool); they skip when the session runs on Tansu. Each starts
its own broker and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from callguard.core.schema import AUDIT_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, kafka_tool, start_kafka, start_redis
from tests.conftest import Worker, bootstrap, broker_kind, cli, env_for, produce
from tests.traffic import NUMBERS, DecisionCounter, load_stream_data, publish_intents

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(broker_kind() != "kafka", reason="needs Apache Kafka (the session runs on Tansu)"),
]

TOTAL = 50_000
GROUP = "callguard-kafka"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    broker = start_kafka(tmp_path)
    redis_server = start_redis(tmp_path)
    env = env_for(broker.url, f"redis://127.0.0.1:{redis_server.port}/0", CALLGUARD_APP_ID=GROUP)
    load_stream_data(env, tmp_path)
    try:
        yield broker, redis_server, env
    finally:
        redis_server.stop()
        broker.stop()


async def test_broker_killed_mid_stream_and_restarted_on_its_log_loses_no_intent(
    stack: tuple[Server, Server, dict[str, str]], tmp_path: Path
) -> None:
    """kill -9 the broker while the worker decides 50 000 intents, restart it on
    the same log directory: every intent gets a decision, duplicates agree, and
    the audit chain verifies."""
    broker, _, env = stack
    restarted: Server | None = None
    worker = Worker(env, tmp_path / "worker.log").start()
    counter = DecisionCounter(broker.url)
    try:
        await counter.consumer.start()
        try:
            await publish_intents(broker.url, TOTAL)
            await counter.until(TOTAL // 4, timeout=120)
            assert len(counter.first) < TOTAL, "the worker finished before the broker could be killed"
            broker.process.send_signal(signal.SIGKILL)
            broker.process.wait(10)
            killed_at = time.monotonic()
            decided_at_kill = len(counter.first)
            await asyncio.sleep(2.0)  # down for a while: the worker and the reader lose their connections
            restarted = await asyncio.to_thread(start_kafka, tmp_path)  # the same log directory and ports
            restarted_after = time.monotonic() - killed_at
            await counter.until(TOTAL, timeout=180)
            all_decided_after = time.monotonic() - killed_at
            await asyncio.sleep(1.0)
            await counter.poll()
            assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        finally:
            await counter.consumer.stop()
            worker.stop()
        missing = TOTAL - len(counter.first)
        print(
            f"\nbroker kill -9 after {decided_at_kill:,} of {TOTAL:,} decisions, restarted on its log "
            f"{restarted_after:.1f} s after the kill, every intent decided {all_decided_after:.1f} s after "
            f"the kill: missing {missing}, duplicates {counter.duplicates:,}, "
            f"conflicting duplicates {len(counter.conflicts)}"
        )
        assert missing == 0
        assert counter.conflicts == []
        verified = cli(env, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "intact" in verified.stdout
        print(verified.stdout.splitlines()[-1])
    finally:
        if restarted is not None:
            restarted.stop()


# --- lag, checked by Kafka's own consumer-group command ----------------------------


def kafka_describe(bootstrap: str, group: str) -> dict[int, tuple[int | None, int, int | None]]:
    """``kafka-consumer-groups --describe``: partition -> (current offset, log end offset, lag)."""
    result = kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server", bootstrap, "--describe", "--group", group,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["GROUP", "TOPIC", "PARTITION"])
    columns = lines[header].split()
    found: dict[int, tuple[int | None, int, int | None]] = {}
    for line in lines[header + 1 :]:
        row = dict(zip(columns, line.split(), strict=False))
        if row.get("GROUP") != group or row.get("TOPIC") != INTENTS_TOPIC:
            continue
        found[int(row["PARTITION"])] = (offset(row["CURRENT-OFFSET"]), int(row["LOG-END-OFFSET"]), offset(row["LAG"]))
    return found


def offset(text: str) -> int | None:
    return None if text == "-" else int(text)


def callguard_lag(env: dict[str, str]) -> dict[int, tuple[int | None, int, int]]:
    """``callguard lag --json``: partition -> (committed, end, lag)."""
    result = cli(env, "lag", "--json", "--samples", "1")
    assert result.returncode == 0, result.stderr
    sample = orjson.loads(result.stdout.splitlines()[-1])
    return {p["partition"]: (p["committed"], p["end"], p["lag"]) for p in sample["partitions"]}


def metrics_lag(web_port: int) -> dict[int, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        int(sample.labels["partition"]): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "callguard_consumer_lag_offsets"
    }


def intents(prefix: str, count: int) -> list[bytes]:
    return [
        orjson.dumps(
            {"intent_id": f"{prefix}-{n}", "callee": f"+39349{n:07d}", "operator_id": "r-op", "client_id": "acme"}
        )
        for n in range(count)
    ]


async def test_lag_agrees_with_kafkas_consumer_group_command(
    stack: tuple[Server, Server, dict[str, str]], tmp_path: Path
) -> None:
    broker, _, env = stack
    bootstrap = f"127.0.0.1:{broker.port}"
    keys: list[bytes | None] = [f"k{n}".encode() for n in range(600)]
    worker = Worker({**env, "CALLGUARD_METRICS_INTERVAL": "0.5"}, tmp_path / "worker.log").start()
    try:
        await produce(broker.url, INTENTS_TOPIC, intents("lag-a", 600), keys)

        def settled() -> tuple[Any, ...] | None:
            """The three views, once the worker decided everything it was sent."""
            ours, kafkas, metrics = callguard_lag(env), kafka_describe(bootstrap, GROUP), metrics_lag(worker.web_port)
            done = len(ours) == 6 and all(lag == 0 for _, _, lag in ours.values())
            return (ours, kafkas, metrics) if done and len(metrics) == 6 and not any(metrics.values()) else None

        deadline = time.monotonic() + 60
        while (views := await asyncio.to_thread(settled)) is None:
            assert time.monotonic() < deadline, "the worker did not catch up within 60 s"
            await asyncio.sleep(0.5)
        ours, kafkas, metrics = views
        assert ours == kafkas
        assert sum(end for _, end, _ in ours.values()) == 600
        assert metrics == {p: float(lag) for p, (_, _, lag) in kafkas.items() if lag is not None}
    finally:
        worker.stop()  # commits what it decided

    # the group is idle and intents wait: the same lag, partition by partition
    await produce(broker.url, INTENTS_TOPIC, intents("lag-b", 300), keys[:300])
    ours, kafkas = (
        await asyncio.to_thread(callguard_lag, env),
        await asyncio.to_thread(kafka_describe, bootstrap, GROUP),
    )
    print(f"\nlag per partition, callguard lag: {ours}\nkafka-consumer-groups --describe: {kafkas}")
    assert ours == kafkas
    assert sum(lag for _, _, lag in ours.values()) == 300


# --- a killed worker's partitions taken over, with and without static membership --------


class AuditTimes:
    """Reads the audit topic from its end in the background: per source
    partition of the intents, the broker timestamps (s) of its audit records."""

    def __init__(self, broker_url: str) -> None:
        self.consumer = AIOKafkaConsumer(
            AUDIT_TOPIC, bootstrap_servers=bootstrap(broker_url), auto_offset_reset="latest"
        )
        self.times: dict[int, list[float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.getmany(timeout_ms=100)  # positioned at the end before anything is published
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    partition = orjson.loads(record.value)["source"]["partition"]
                    self.times.setdefault(partition, []).append(record.timestamp / 1000)

    def first_after(self, partitions: set[int], moment: float) -> float | None:
        """Seconds from ``moment`` to the first audit record of ``partitions`` written after it."""
        later = [t for p in partitions for t in self.times.get(p, ()) if t > moment]
        return min(later) - moment if later else None

    async def wait_after(self, partitions: set[int], moment: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while (found := self.first_after(partitions, moment)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return found

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def steady(broker_url: str, prefix: str, rate: int, stop: asyncio.Event) -> int:
    """Publish intents ``prefix-N`` at about ``rate`` a second until ``stop``; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), linger_ms=5)
    await producer.start()
    n = 0
    try:
        started = time.monotonic()
        while not stop.is_set():
            while n < (time.monotonic() - started) * rate:
                callee = f"+39349{n % NUMBERS:07d}"
                value = {"intent_id": f"{prefix}-{n}", "callee": callee, "operator_id": "r-op", "client_id": "acme"}
                await producer.send(INTENTS_TOPIC, orjson.dumps(value), key=str(n).encode())
                n += 1
            await asyncio.sleep(0.02)
        await producer.flush()
    finally:
        await producer.stop()
    return n


def assigned(worker: Worker) -> set[int]:
    status, body = worker.health()
    return set(body["assigned_partitions"]) if status == 200 else set()


async def until_shared(workers: list[Worker], timeout: float = 90) -> list[set[int]]:
    """Wait until the workers split the 6 partitions between them, each owning some."""
    deadline = time.monotonic() + timeout
    shares: list[set[int]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            shares = [await asyncio.to_thread(assigned, worker) for worker in workers]
            if all(shares) and sum(map(len, shares)) == 6 and len(set().union(*shares)) == 6:
                return shares
        await asyncio.sleep(0.3)
    raise AssertionError(f"the workers never shared the 6 partitions: {shares}")


async def kill_and_take_over(env: dict[str, str], tmp_path: Path, name: str, static: bool) -> dict[str, float | None]:
    """Two workers of group ``name`` (product session timeout) under a steady
    300 intents/s. Worker 1 is killed -9: the survivor must take its
    partitions over and decide for them. Worker 1 comes back, shares again,
    is killed -9 again and restarted at once: how long until its partitions
    are decided again. Every intent published gets a decision, duplicates
    agree. With ``static``, each worker has its own ``CALLGUARD_INSTANCE_ID``."""
    env = {k: v for k, v in env.items() if k != "CALLGUARD_SESSION_TIMEOUT"} | {"CALLGUARD_APP_ID": name}
    envs = [env | ({"CALLGUARD_INSTANCE_ID": f"{name}-{n}"} if static else {}) for n in (1, 2)]
    broker_url = env["CALLGUARD_BROKER"]
    first = Worker(envs[0], tmp_path / f"{name}-1.log").start()
    second = Worker(envs[1], tmp_path / f"{name}-2.log").start(wait=False)
    audit = AuditTimes(broker_url)
    counter = DecisionCounter(broker_url, prefix=f"{name}-")  # a new group decides the earlier runs' intents too
    stop = asyncio.Event()
    load: asyncio.Task[int] | None = None
    figures: dict[str, float | None] = {}
    kept = False
    try:
        victim, _ = await until_shared([first, second])
        await audit.start()
        await counter.consumer.start()
        load = asyncio.create_task(steady(broker_url, name, 300, stop))
        await asyncio.sleep(3)

        first.kill()
        killed_at = time.time()
        figures["takeover"] = await audit.wait_after(victim, killed_at, timeout=60)
        assert figures["takeover"] is not None, f"nobody decided for partitions {sorted(victim)} after the kill"
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(assigned, second) != set(range(6)):
            assert time.monotonic() < deadline, "the survivor never owned every partition"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # the survivor alone decides for a while

        first = Worker(envs[0], tmp_path / f"{name}-1.log").start(wait=False)
        victim, _ = await until_shared([first, second])
        await asyncio.sleep(2)
        first.kill()
        killed_at = time.time()
        first = Worker(envs[0], tmp_path / f"{name}-1.log").start(wait=False)
        figures["restart"] = await audit.wait_after(victim, killed_at, timeout=60)
        assert figures["restart"] is not None, f"nobody decided for partitions {sorted(victim)} after the restart"
        shares = await until_shared([first, second])  # the restarted worker is a member again
        kept = shares[0] == victim
        await asyncio.sleep(2)
    finally:
        stop.set()
        published = await load if load is not None else 0
        try:
            if published:
                deadline = time.monotonic() + 60
                while len(counter.first) < published:
                    if time.monotonic() > deadline:
                        break
                    await counter.poll()
        finally:
            await counter.consumer.stop()
            await audit.stop()
            first.stop()
            second.stop()
    decided = len(counter.first)
    print(
        f"\n{name} ({'CALLGUARD_INSTANCE_ID set' if static else 'no instance id'}, session timeout 6 s): "
        f"partitions taken over by the survivor {figures['takeover']:.1f} s after kill -9; "
        f"killed and restarted at once, its partitions decided again after {figures['restart']:.1f} s "
        f"({'its own partitions back' if kept else 'partitions reassigned'}); "
        f"{published:,} intents, {published - decided} undecided, {counter.duplicates:,} duplicates"
    )
    assert decided == published
    assert counter.conflicts == []
    return figures


async def test_a_killed_workers_partitions_are_taken_over_with_and_without_static_membership(
    stack: tuple[Server, Server, dict[str, str]], tmp_path: Path
) -> None:
    """Section 2, item 5: rebalance and takeover on Apache Kafka. The figures
    (goal: at most 10 s) are printed; the test asserts the behaviour: the
    survivor takes over and every intent is decided, in both group modes."""
    _, _, env = stack
    dynamic = await kill_and_take_over(env, tmp_path, "takeover-dynamic", static=False)
    static = await kill_and_take_over(env, tmp_path, "takeover-static", static=True)
    for figures in (dynamic, static):
        assert figures["takeover"] is not None and figures["takeover"] < 60
        assert figures["restart"] is not None and figures["restart"] < 60


# --- exactly-once decisions ----------------------------------------------------------


async def test_exactly_once_a_worker_killed_mid_stream_leaves_no_duplicate_for_read_committed(
    stack: tuple[Server, Server, dict[str, str]], tmp_path: Path
) -> None:
    """Section 2, item 3: with CALLGUARD_PROCESSING_GUARANTEE=exactly_once a
    worker killed -9 mid-stream and restarted leaves every intent decided
    exactly once for a read_committed consumer, and the audit chains verify
    (what the dead worker's open transactions wrote is aborted)."""
    broker, _, env = stack
    total = 20_000
    env = {**env, "CALLGUARD_PROCESSING_GUARANTEE": "exactly_once", "CALLGUARD_APP_ID": "callguard-eos"}
    worker = Worker(env, tmp_path / "worker.log").start()
    committed = DecisionCounter(broker.url, isolation_level="read_committed")
    everything = DecisionCounter(broker.url)  # read_uncommitted: aborted decisions too
    restarted: Worker | None = None
    try:
        await committed.consumer.start()
        await everything.consumer.start()
        started = time.monotonic()
        await publish_intents(broker.url, total, prefix="eos")
        await committed.until(total // 4, timeout=120)
        assert worker.process is not None
        reader = committed.consumer
        for attempt in itertools.count():  # kill it while a transaction is open: decisions written, not committed
            assert attempt < 200 and len(committed.first) < total, "never caught the worker inside a transaction"
            worker.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.3)  # what the broker holds now stays as the frozen worker left it
            await committed.poll()
            await committed.poll()
            if any((reader.last_stable_offset(tp) or 0) < (reader.highwater(tp) or 0) for tp in reader.assignment()):
                worker.process.send_signal(signal.SIGKILL)
                break
            worker.process.send_signal(signal.SIGCONT)
            await asyncio.sleep(random.uniform(0.01, 0.1))
        worker.process.wait(10)
        decided_at_kill = len(committed.first)
        restarted = Worker(env, tmp_path / "worker.log").start()
        await committed.until(total, timeout=180)
        took = time.monotonic() - started
        await asyncio.sleep(2.0)
        await committed.poll()
        await everything.until(total, timeout=30)
        await asyncio.sleep(1.0)
        await everything.poll()
    finally:
        await committed.consumer.stop()
        await everything.consumer.stop()
        worker.stop()
        if restarted is not None:
            restarted.stop()
    missing = total - len(committed.first)
    print(
        f"\nexactly_once, kill -9 after {decided_at_kill:,} of {total:,} decisions, all decided {took:.1f} s after "
        f"publishing started: read_committed missing {missing}, duplicates {committed.duplicates}; "
        f"read_uncommitted duplicates (aborted, then decided again) {everything.duplicates:,}"
    )
    assert missing == 0
    assert everything.duplicates > 0, "the kill found no transaction open"
    assert committed.duplicates == 0
    assert committed.conflicts == []
    verified = cli(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout
    print(verified.stdout.splitlines()[-1])
