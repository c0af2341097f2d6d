"""A stream of intents for the tests that kill or restart brokers and workers
mid-stream (``tests/worker/test_reliability.py``, ``tests/kafka/test_kafka_broker.py``):
the data their worker decides by, ``NUMBERS`` callees (+39 349 NNN NNNN, every
fifth opposed), the intents published in bulk, and a counter of the decisions
that come back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from tests.conftest import bootstrap, cli, today, write_csv

NUMBERS = 2_000


def load_stream_data(env: dict[str, str], directory: Path, *register_options: str) -> None:
    """The operator ``r-op`` and a register of ``NUMBERS`` numbers, loaded with the CLI."""
    ops = write_csv(
        directory / "ops.csv", "operator_id,status,valid_from,valid_until", ["r-op,active,2024-01-01,2030-01-01"]
    )
    reg = write_csv(
        directory / "reg.csv",
        "number,status",
        [f"+39349{n:07d},{'opposed' if n % 5 == 0 else 'clear'}" for n in range(NUMBERS)],
    )
    register = ("register", "load", str(reg), "--as-of", today(), *register_options)
    for argv in (("operators", "load", str(ops)), register):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr


async def publish_intents(broker_url: str, total: int, prefix: str = "r") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for n in range(total):
            callee = f"+39349{n % (NUMBERS + 100):07d}"  # 100 numbers never checked
            value = {"intent_id": f"{prefix}-{n}", "callee": callee, "operator_id": "r-op", "client_id": "acme"}
            futures.append(await producer.send(INTENTS_TOPIC, orjson.dumps(value), key=callee.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class DecisionCounter:
    """Reads every decision from the start; counts distinct intents and duplicates
    (of the intents whose id starts with ``prefix``)."""

    def __init__(self, broker_url: str, prefix: str = "", isolation_level: str = "read_uncommitted") -> None:
        self.consumer = AIOKafkaConsumer(
            DECISIONS_TOPIC,
            bootstrap_servers=bootstrap(broker_url),
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
        )
        self.prefix = prefix
        self.first: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.duplicates = 0
        self.conflicts: list[str] = []

    async def poll(self) -> None:
        for records in (await self.consumer.getmany(timeout_ms=300, max_records=10_000)).values():
            for record in records:
                d = orjson.loads(record.value)
                if not d["intent_id"].startswith(self.prefix):
                    continue
                seen = (d["decision"], tuple(d["reasons"]))
                previous = self.first.setdefault(d["intent_id"], seen)
                if previous is not seen:
                    self.duplicates += 1
                    if previous != seen:
                        self.conflicts.append(d["intent_id"])

    async def until(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.first) < count and time.monotonic() < deadline:
            await self.poll()
