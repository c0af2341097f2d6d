"""Decisions per second of a callguard worker vs. a raw aiokafka pass-through.

Both run in the same process tree, on the same embedded broker and Redis, on
the same pre-published intents, so the ratio is meaningful on a noisy machine.

- baseline: one aiokafka consumer + producer that only decodes each intent
  with orjson, re-encodes it and forwards it, gathering sends per fetch and
  committing after each (what a guard that decides nothing would cost);
- callguard: a real ``callguard worker`` process (two outputs per intent:
  decision and audit record), timed from its first decision to its last.

    ./dev bench throughput [--intents 50000] [--register 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from callguard.embedded import Embedded, free_port
from callguard.facts import Consent, Operator, OptOut
from callguard.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.stores import Stores

PARTITIONS = 6


def number(i: int) -> str:
    return f"+39347{i:07d}"


async def load_data(redis_url: str, register_size: int, today: date) -> None:
    """A register with 20 % opposed, consents for 2 %, opt-outs for 1 %, 50 operators."""
    stores = Stores.from_url(redis_url, timeout=30)
    rows = ((number(i), i % 5 == 0, date(2023, 5, 1) if i % 10 == 0 else None) for i in range(register_size))
    await stores.add_register_results(rows, today, "*")
    await stores.replace_operators(
        [
            Operator(f"op-{n}", "active" if n < 45 else "suspended", date(2024, 1, 1), date(2030, 1, 1))
            for n in range(50)
        ],
        "bench",
    )
    await stores.upsert_consents(
        [(number(i), Consent("acme", "consent", date(2025, 1, 1))) for i in range(0, register_size, 50)]
    )
    await stores.add_optouts([(number(i), OptOut("*", date(2025, 1, 1))) for i in range(7, register_size, 100)])
    await stores.close()


async def publish(bootstrap: str, topic: str, count: int, register_size: int) -> None:
    rng = random.Random(1)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in (topic, DECISIONS_TOPIC)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=512 * 1024)
    await producer.start()
    futures = []
    for n in range(count):
        callee = number(rng.randrange(int(register_size * 1.05)))  # 5 % never checked
        intent = {
            "intent_id": f"b-{n}",
            "callee": callee,
            "operator_id": f"op-{rng.randrange(52)}",
            "client_id": rng.choice(("acme", "beta")),
            "purpose": "marketing",
        }
        futures.append(await producer.send(topic, orjson.dumps(intent), key=callee.encode()))
    await asyncio.gather(*futures)
    await producer.stop()


async def baseline(bootstrap: str, topic: str, count: int, run: int) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-baseline-{run}", auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_records=2000,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    seen = 0
    started = 0.0
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if not started and batches:
                started = time.perf_counter()
            futures = []
            for records in batches.values():
                for record in records:
                    value = orjson.dumps(orjson.loads(record.value))
                    futures.append(await producer.send("bench.passthrough", value, key=record.key))
                seen += len(records)
            await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


async def callguard_run(embedded: Embedded, count: int, run: int, workdir: Path) -> float:
    """Start a worker (new consumer group) and time its decisions, first to last."""
    bootstrap = embedded.broker_url.split("://", 1)[1]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    partitions = [TopicPartition(DECISIONS_TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    for tp, end in (await consumer.end_offsets(partitions)).items():
        consumer.seek(tp, end)
    env = {
        "CALLGUARD_BROKER": embedded.broker_url,
        "CALLGUARD_REDIS_URL": embedded.redis_url,
        "CALLGUARD_WEB_PORT": str(free_port()),
        "CALLGUARD_APP_ID": f"bench-callguard-{run}",
        "PATH": "/usr/bin:/bin",
    }
    launched_ms = int(time.time() * 1000)
    with (workdir / f"worker-{run}.log").open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
    seen: set[str] = set()
    started = 0.0
    try:
        while len(seen) < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                # only this run's decisions (end offsets can lag on some brokers)
                fresh = [r for r in records if r.timestamp >= launched_ms]
                if fresh and not started:
                    started = time.perf_counter()
                seen.update(orjson.loads(r.value)["intent_id"] for r in fresh)
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {workdir}/worker-{run}.log")
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        worker.terminate()
        worker.wait(30)


async def main(args: argparse.Namespace) -> None:
    with Embedded(workdir=Path(tempfile.mkdtemp(prefix="callguard-bench-"))) as embedded:
        bootstrap = embedded.broker_url.split("://", 1)[1]
        today = datetime.now(ZoneInfo("Europe/Rome")).date()
        started = time.perf_counter()
        await load_data(embedded.redis_url, args.register, today)
        print(f"loaded a {args.register:,}-number register in {time.perf_counter() - started:.1f}s")
        await publish(bootstrap, INTENTS_TOPIC, args.intents, args.register)
        print(f"published {args.intents:,} intents on {PARTITIONS} partitions\n")
        base, guard = [], []
        for run in range(args.runs):
            base.append(await baseline(bootstrap, INTENTS_TOPIC, args.intents, run))
            guard.append(await callguard_run(embedded, args.intents, run, embedded.workdir))
            print(f"run {run + 1}: baseline {base[-1]:>9,.0f}/s   callguard {guard[-1]:>9,.0f} decisions/s")
        b, g = statistics.median(base), statistics.median(guard)
        print(f"\nmedian of {args.runs}: baseline pass-through {b:,.0f} events/s, callguard {g:,.0f} decisions/s")
        print(f"ratio callguard / baseline: {g / b:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=50_000)
    parser.add_argument("--register", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
