"""What only a real broker shows: Apache Kafka killed and restarted on its log,
and the group's lag as Kafka's own consumer-group command reports it.

These tests need Apache Kafka (Tansu keeps nothing on disk and has no
consumer-group tool); they skip when the session runs on Tansu. Each starts
its own broker and Redis.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callguard.embedded import Server, kafka_tool, start_kafka, start_redis
from callguard.schema import INTENTS_TOPIC
from tests.conftest import Worker, broker_kind, cli, env_for, produce, today, write_csv
from tests.test_reliability import NUMBERS, DecisionCounter, publish_intents

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
    ops = write_csv(
        tmp_path / "ops.csv", "operator_id,status,valid_from,valid_until", ["r-op,active,2024-01-01,2030-01-01"]
    )
    reg = write_csv(
        tmp_path / "reg.csv",
        "number,status",
        [f"+39349{n:07d},{'opposed' if n % 5 == 0 else 'clear'}" for n in range(NUMBERS)],
    )
    for argv in (("operators", "load", str(ops)), ("register", "load", str(reg), "--as-of", today())):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr
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
