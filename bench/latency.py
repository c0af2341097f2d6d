"""Latency from intent produced to decision, at a steady rate, against a running worker.

Starts an embedded broker and Redis, loads the data of ``bench/mix.py``
(register of ``--register`` numbers, consents, opt-outs, 50 operators) and,
for each worker fetch wait of ``--fetch-max-wait-ms``:

- a raw aiokafka pass-through (a consumer group with the same fetch wait that
  forwards each intent at once): the broker's and the Kafka clients' part,
  nothing decided;
- a real ``callguard worker`` (``CALLGUARD_FETCH_MAX_WAIT_MS``), warmed up.

Intents of the mix are produced one by one (``linger_ms=0``, ``acks=all``)
at ``--rate`` per second for ``--seconds`` (after ``--warmup`` seconds that
are not counted). Two latencies per intent, from the moment ``send()`` was
called (this process's clock):

- **written**: to the decision's broker timestamp (its CreateTime, stamped by
  the worker's producer when it appended the decision, millisecond
  precision): the worker's latency plus the intent's trip to the broker;
- **consumed**: to the moment this process read the decision, with a reader
  fetching with ``--reader-wait-ms``: what a dialer would see.

Every process runs on this machine, so the clocks are the same clock.
Prints p50/p99/p99.9/max of each, and how many decisions were missing.

The embedded Tansu broker holds a fetch's answer for part of its maximum
wait even when data arrives meanwhile (Apache Kafka answers as soon as data
arrives), and it slows down as its logs grow: the pass-through rows show the
broker's and the clients' part, and the first and last 5 s of each row
show the slowdown.

    ./dev bench latency [--rate 1000] [--seconds 30] [--fetch-max-wait-ms 50,5] [--register 200000]
                        [--broker kafka|tansu] [--worker-env NAME=VALUE ...]

The broker is Apache Kafka (one KRaft node, the jars ``./dev`` fetched) unless
``--broker tansu``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from mix import POLICY, intents, load_data

from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, free_port, start_broker, start_kafka, start_redis, wait_healthy

PARTITIONS = 6
PASSTHROUGH = "bench.latency.passthrough"


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<50} no samples"
    ordered = sorted(values)
    return (
        f"{label:<50} p50 {percentile(ordered, 0.5):6.1f}   p99 {percentile(ordered, 0.99):6.1f}   "
        f"p99.9 {percentile(ordered, 0.999):6.1f}   max {ordered[-1]:6.1f} ms"
    )


class Reader:
    """Reads an output topic from its end; notes when each key arrived."""

    def __init__(self, bootstrap: str, topic: str, wait_ms: int) -> None:
        # read_committed, as a dialer reads: with exactly-once workers a decision counts once its transaction committed
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, isolation_level="read_committed"
        )
        self.topic = topic
        self.arrived: dict[bytes, tuple[float, int, float | None]] = {}  # key -> (read at, timestamp ms, decided at)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key not in self.arrived:
                        decided = orjson.loads(record.value).get("decided_at")
                        at = datetime.fromisoformat(decided.replace("Z", "+00:00")).timestamp() if decided else None
                        self.arrived[record.key] = (now, record.timestamp, at)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()


async def steady(bootstrap: str, prefix: str, rate: int, seconds: float, register: int) -> dict[bytes, float]:
    """Produce intents of the mix at ``rate``/s; returns intent_id -> send time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    sent: dict[bytes, float] = {}
    futures = []
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        for n, (key, value) in enumerate(
            intents(int(rate * seconds), register, prefix=prefix, seed=zlib.crc32(prefix.encode()))
        ):
            delay = started + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            intent_id = orjson.loads(value)["intent_id"].encode()
            sent[intent_id] = time.time()
            futures.append(await producer.send(INTENTS_TOPIC, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def passthrough(bootstrap: str, wait_ms: int, group: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """Consume intents (own group, from the end) and forward each at once, keyed by intent_id."""
    consumer = AIOKafkaConsumer(
        INTENTS_TOPIC, bootstrap_servers=bootstrap, group_id=group,
        auto_offset_reset="latest", fetch_max_wait_ms=wait_ms, enable_auto_commit=False, session_timeout_ms=6000,
        heartbeat_interval_ms=600,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for tp in consumer.assignment():
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            futures = []
            for records in batches.values():
                for record in records:
                    intent = orjson.loads(record.value)
                    futures.append(
                        await producer.send(PASSTHROUGH, orjson.dumps(intent), key=intent["intent_id"].encode())
                    )
            await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


@dataclass
class Latencies:
    """Milliseconds per intent, in send order."""

    written: list[float] = field(default_factory=list)  # send() -> decision's broker timestamp
    consumed: list[float] = field(default_factory=list)  # send() -> read by this process
    queued: list[float] = field(default_factory=list)  # send() -> decided_at (the worker's batch began)
    deciding: list[float] = field(default_factory=list)  # decided_at -> decision's broker timestamp
    missing: int = 0


async def measure(bootstrap: str, topic: str, prefix: str, args: argparse.Namespace) -> Latencies:
    """Warm up, then produce steadily and collect the latencies."""
    reader = Reader(bootstrap, topic, args.reader_wait_ms)
    await reader.start()
    try:
        await steady(bootstrap, f"{prefix}-warm", args.rate, args.warmup, args.register)
        sent = await steady(bootstrap, prefix, args.rate, args.seconds, args.register)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(key in reader.arrived for key in sent):
            await asyncio.sleep(0.1)
    finally:
        await reader.stop()
    found = Latencies()
    for key, at in sent.items():  # in send order
        if key not in reader.arrived:
            found.missing += 1
            continue
        read_at, timestamp, decided = reader.arrived[key]
        found.written.append(max(timestamp / 1000 - at, 0.0) * 1000)
        found.consumed.append((read_at - at) * 1000)
        if decided is not None:
            found.queued.append(max(decided - at, 0.0) * 1000)
            found.deciding.append(max(timestamp / 1000 - decided, 0.0) * 1000)
    return found


async def fresh_broker(workdir: Path, name: str, kind: str) -> tuple[Server, str]:
    """A new embedded broker with the topics (Tansu slows down as its in-memory logs grow)."""
    (workdir / name).mkdir()
    broker = start_kafka(workdir / name) if kind == "kafka" else start_broker(workdir / name)
    bootstrap = f"127.0.0.1:{broker.port}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (INTENTS_TOPIC, DECISIONS_TOPIC, PASSTHROUGH)])
    await admin.close()
    return broker, bootstrap


def rows(label: str, found: Latencies, window: int) -> str:
    lines = [
        summary(f"{label}: written", found.written),
        summary(f"{label}: consumed", found.consumed) + f"   missing {found.missing}",
    ]
    if found.queued:
        lines += [
            summary("  of written: send -> decided_at (broker, queue)", found.queued),
            summary("  of written: decided_at -> written (worker)", found.deciding),
        ]
    lines += [
        summary("  written, first 5 s", found.written[:window]),
        summary("  written, last 5 s", found.written[-window:]),
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    waits = [int(w) for w in args.fetch_max_wait_ms.split(",")]
    window = int(args.rate * 5)
    workdir = Path(tempfile.mkdtemp(prefix="callguard-latency-"))
    redis_server = start_redis(workdir)
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    try:
        await load_data(redis_url, args.register, datetime.now(ZoneInfo("Europe/Rome")).date())
        print(
            f"broker: {'Apache Kafka' if args.broker == 'kafka' else 'Tansu'}; "
            f"{args.rate:,} intents/s for {args.seconds:g} s (after {args.warmup:g} s of warm-up), a fresh broker "
            f"for each row, reader fetch wait {args.reader_wait_ms} ms; milliseconds from send() to the decision\n"
        )
        for phase, wait in enumerate(waits):
            broker, bootstrap = await fresh_broker(workdir, f"pass-{phase}", args.broker)
            try:
                ready, stop = asyncio.Event(), asyncio.Event()
                forwarder = asyncio.create_task(passthrough(bootstrap, wait, "bench-latency-pass", ready, stop))
                await asyncio.wait_for(ready.wait(), 60)  # the group joined
                found = await measure(bootstrap, PASSTHROUGH, f"p{phase}", args)
                stop.set()
                await forwarder
            finally:
                broker.stop()
            print(rows(f"pass-through, fetch wait {wait} ms", found, window), flush=True)

            broker, bootstrap = await fresh_broker(workdir, f"worker-{phase}", args.broker)
            port = free_port()
            env = {
                "CALLGUARD_BROKER": f"kafka://{bootstrap}",
                "CALLGUARD_REDIS_URL": redis_url,
                "CALLGUARD_WEB_PORT": str(port),
                "CALLGUARD_APP_ID": "bench-latency",
                "CALLGUARD_POLICY": POLICY,
                "CALLGUARD_SESSION_TIMEOUT": "3",
                "CALLGUARD_FETCH_MAX_WAIT_MS": str(wait),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                **dict(item.split("=", 1) for item in args.worker_env),
            }
            with (workdir / f"worker-{phase}.log").open("wb") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log
                )
            try:
                wait_healthy(port, worker)
                found = await measure(bootstrap, DECISIONS_TOPIC, f"w{phase}", args)
            finally:
                worker.terminate()
                worker.wait(30)
                broker.stop()
            print(rows(f"callguard, fetch wait {wait} ms", found, window) + "\n", flush=True)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--register", type=int, default=200_000)
    parser.add_argument("--fetch-max-wait-ms", default="50,5", help="worker fetch waits to try, comma-separated")
    parser.add_argument("--reader-wait-ms", type=int, default=5)
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka", help="the embedded broker to run on")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE")
    asyncio.run(main(parser.parse_args()))
