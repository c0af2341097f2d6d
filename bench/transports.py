"""Kafka client libraries under the same load: aiokafka vs. librdkafka (confluent-kafka), raw and in Faust.

Does Faust on librdkafka (``confluent://``) help? On one
embedded broker, on the same pre-published intents of ``bench/mix.py``
(``--intents`` of them, 6 partitions), every run times, in alternating order
(reversed every other run, as the broker slows down while its log grows):

- raw-aiokafka: ``bench/throughput.py``'s baseline: consume, orjson decode and
  encode, produce (gathered per fetch of at most 2000), commit per fetch;
- raw-confluent: the same with confluent-kafka: ``Consumer.consume(2000)``,
  ``Producer.produce`` each record, ``flush()`` and a synchronous commit per
  batch (``acks=1``, ``linger.ms=5`` and no idempotence, like the baseline);
- faust-count-{aiokafka,confluent}: a Faust worker process (new group each
  run) whose agent does ``async for batch in stream.take(2000, within=0.02)``
  and counts; timed inside the agent from its first batch; it then commits
  once explicitly and the offsets the broker holds for its group are checked;
- faust-fwd-{aiokafka,confluent} (``--forward``): the agent also sends each
  value (orjson decoded and encoded) to an output topic, gathered per batch;
  the output topic is then read back: how many records, how many with a value.

A Faust worker that does not finish within ``--timeout`` seconds is killed,
reported with the tail of its log and not run again. faust-streaming
0.15.3's confluent driver never reads a record as shipped (its consumer is
only polled once partitions are assigned, and librdkafka assigns them only
while polled); ``--patch-confluent`` patches that and the three consumer bugs
met next (see :func:`patch_confluent_consumer`), to time what a fixed
consumer would do. Every figure is events/s; the ratios are of medians over
``--runs`` runs on the same broker.

    /tmp/cfk-venv/bin/python bench/transports.py [--intents 100000] [--runs 3] [--forward] [--only raw|faust]
                                                 [--patch-confluent] [--timeout 90]

Needs ``pip install confluent-kafka`` (wheels ship librdkafka).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

try:
    import confluent_kafka
except ImportError:
    confluent_kafka = None

BATCH = 2000


def raw_confluent(bootstrap: str, topic: str, count: int, run: int) -> float:
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-cfk-{run}", "auto.offset.reset": "earliest",
         "enable.auto.commit": False, "enable.partition.eof": False}
    )  # fmt: skip
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 5, "enable.idempotence": False}
    )
    consumer.subscribe([topic])
    seen, started = 0, 0.0
    try:
        while seen < count:
            messages = consumer.consume(num_messages=BATCH, timeout=1.0)
            if not messages:
                continue
            started = started or time.perf_counter()
            for message in messages:
                if message.error():
                    raise RuntimeError(message.error())
                value = orjson.dumps(orjson.loads(message.value()))
                producer.produce("bench.passthrough", value, message.key())
            seen += len(messages)
            producer.flush()
            consumer.commit(asynchronous=False)
        return count / (time.perf_counter() - started)
    finally:
        consumer.close()


def patch_confluent_consumer() -> None:
    """The least that makes faust-streaming 0.15.3's confluent consumer read (``--patch-confluent``)."""
    from faust.transport.drivers import confluent as driver

    thread, subscribe, to_message = driver.ConfluentConsumerThread, driver.ConfluentConsumerThread.subscribe, None

    async def serve_assignment(self: Any, topics: Any) -> None:
        # 1. librdkafka hands over the assignment only inside consume(), which Faust calls only once assigned
        await subscribe(self, topics)

        async def poll() -> None:
            while not self._assigned:
                self._consumer.consumer.consume(num_messages=1, timeout=0.05)
                await asyncio.sleep(0)

        await self.cast_thread(poll)

    async def seek_to_committed(self: Any) -> Any:  # 2. the driver awaits the synchronous seek()
        consumer = self._ensure_consumer().consumer
        committed = consumer.committed(consumer.assignment())
        for tp in committed:
            if tp.offset >= 0:
                consumer.seek(tp)
        return {driver.ensure_TP(tp): tp.offset for tp in committed}

    def with_generation(self: Any, tp: Any, record: Any) -> Any:  # 4. streams skip messages of generation None
        message = to_message(self, tp, record)
        message.generation_id = self.app.consumer_generation_id
        return message

    to_message = driver.Consumer._to_message
    thread.subscribe, thread._seek_to_committed = serve_assignment, seek_to_committed
    thread.verify_event_path = lambda self, now, tp: None  # 3. missing: the livelock detector crashes the consumer
    driver.Consumer._to_message = with_generation


def faust_child(args: argparse.Namespace) -> None:
    """The Faust worker (run in its own process): writes {"rate", "committed"} to ``args.result``."""
    import faust

    if args.child == "confluent" and args.patch_confluent:
        patch_confluent_consumer()
    app = faust.App(
        args.group, broker=f"{args.child}://{args.bootstrap}", store="memory://",
        datadir=tempfile.mkdtemp(prefix="faust-bench-"), web_enabled=False, topic_partitions=6,
        topic_disable_leader=True, consumer_auto_offset_reset="earliest", producer_linger=0.005,
        producer_max_batch_size=256 * 1024, broker_commit_every=BATCH, broker_commit_interval=1.0,
        stream_buffer_maxsize=4 * BATCH, broker_session_timeout=3, broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=3,
    )  # fmt: skip
    source = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    out = app.topic(args.out, key_serializer="raw", value_serializer="raw") if args.out else None
    state = {"seen": 0, "started": 0.0}

    @app.agent(source)
    async def count(stream: faust.StreamT) -> None:
        async for batch in stream.take(BATCH, within=0.02):
            state["started"] = state["started"] or time.perf_counter()
            if out is not None:
                futures = [await out.send(value=orjson.dumps(orjson.loads(value))) for value in batch]
                await asyncio.gather(*futures)
            state["seen"] += len(batch)
            if state["seen"] >= args.intents:
                rate = args.intents / (time.perf_counter() - state["started"])
                committed = await app.consumer.commit()
                Path(args.result).write_text(json.dumps({"rate": rate, "committed": bool(committed)}))
                return  # the parent stops this process

    faust.Worker(app, loglevel="WARNING").execute_from_commandline()


async def group_offsets(bootstrap: str, group: str, topic: str) -> int:
    """The sum of the offsets the broker holds for ``group`` on ``topic``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(6)])
    finally:
        await consumer.stop()


async def read_back(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records, records with a value) in ``topic``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records = with_value = 0
    try:
        while batches := await consumer.getmany(timeout_ms=2000, max_records=10_000):
            for batch in batches.values():
                records += len(batch)
                with_value += sum(record.value is not None for record in batch)
    finally:
        await consumer.stop()
    return records, with_value


async def faust_run(args: argparse.Namespace, bootstrap: str, transport: str, topic: str, run: int, workdir: Path,
                    forward: bool) -> float | None:  # fmt: skip
    name = f"faust-{'fwd' if forward else 'count'}-{transport}-{run}"
    result, log = workdir / f"{name}.json", workdir / f"{name}.log"
    out = f"bench.{name}" if forward else ""
    argv = [sys.executable, __file__, "--child", transport, "--bootstrap", bootstrap, "--group", name,
            "--topic", topic, "--out", out, "--result", str(result), "--intents", str(args.intents),
            *(["--patch-confluent"] if args.patch_confluent else [])]  # fmt: skip
    launched = time.perf_counter()
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    while child.poll() is None and not result.exists() and time.perf_counter() - launched < args.timeout:
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    child.terminate()
    try:
        child.wait(15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    wall = time.perf_counter() - launched
    if not result.exists():
        tail = "\n      ".join(log.read_text(errors="replace").splitlines()[-12:])
        print(f"  {name}: no result after {wall:.0f}s (exit {child.returncode}); log {log}:\n      {tail}")
        return None
    outcome = json.loads(result.read_text())
    note = f"commit() returned {outcome['committed']}, group offsets {await group_offsets(bootstrap, name, topic):,}"
    if forward:
        records, with_value = await read_back(bootstrap, out)
        note += f", output {records:,} records ({with_value:,} with a value)"
    print(f"  {name}: {outcome['rate']:,.0f}/s ({wall:.0f}s wall with start-up); {note}")
    return float(outcome["rate"])


async def main(args: argparse.Namespace) -> None:
    from throughput import baseline, publish

    from callguard.core.schema import INTENTS_TOPIC
    from callguard.dev.embedded import Embedded

    with Embedded(workdir=Path(tempfile.mkdtemp(prefix="callguard-bench-"))) as embedded:
        bootstrap = embedded.broker_url.split("://", 1)[1]
        started = time.perf_counter()
        await publish(bootstrap, args.intents, 1_000_000)
        print(f"published {args.intents:,} intents on 6 partitions in {time.perf_counter() - started:.1f}s")
        print(f"confluent-kafka {confluent_kafka.version()[0]}, librdkafka {confluent_kafka.libversion()[0]}\n")
        variants: dict[str, object] = {}
        if args.only in (None, "raw"):
            variants["raw-aiokafka"] = lambda run: baseline(bootstrap, args.intents, run)
            variants["raw-confluent"] = lambda run: asyncio.to_thread(
                raw_confluent, bootstrap, INTENTS_TOPIC, args.intents, run
            )
        for forward in (False, True) if args.forward else (False,):
            for transport in ("aiokafka", "confluent") if args.only in (None, "faust") else ():
                variants[f"faust-{'fwd' if forward else 'count'}-{transport}"] = lambda run, t=transport, f=forward: (
                    faust_run(args, bootstrap, t, INTENTS_TOPIC, run, embedded.workdir, f)
                )
        rates: dict[str, list[float]] = {name: [] for name in variants}
        failed: set[str] = set()
        for run in range(args.runs):
            order = list(variants) if run % 2 == 0 else list(reversed(variants))
            print(f"run {run + 1}: {', '.join(order)}")
            for name in order:
                if name in failed:
                    print(f"  {name}: failed before, not run again")
                    continue
                rate = await variants[name](run)  # type: ignore[operator]
                if rate is None:
                    failed.add(name)
                else:
                    rates[name].append(rate)
                    if name.startswith("raw"):
                        print(f"  {name}: {rate:,.0f}/s")
        print(f"\nmedians of {args.runs} runs, {args.intents:,} events each (events/s):")
        medians = {name: statistics.median(values) for name, values in rates.items() if values}
        for name in variants:
            print(f"  {name:<22} {medians[name]:>9,.0f}" if name in medians else f"  {name:<22}    failed")
        for a, b in [(f"{k}-aiokafka", f"{k}-confluent") for k in ("raw", "faust-count", "faust-fwd")]:
            if a in medians and b in medians:
                print(f"  {b} / {a}: {medians[b] / medians[a]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--forward", action="store_true", help="also Faust agents that forward every event")
    parser.add_argument("--only", choices=("raw", "faust"), help="only the raw clients, or only Faust")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds a Faust worker may take")
    parser.add_argument(
        "--patch-confluent", action="store_true", help="patch the 4 consumer bugs of Faust's confluent driver"
    )
    for hidden in ("--child", "--bootstrap", "--group", "--topic", "--out", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if confluent_kafka is None:
        print("confluent-kafka is not installed: pip install confluent-kafka (its wheels ship librdkafka)")
        sys.exit(0)
    if args.child:
        sys.argv = [sys.argv[0], *rest]
        faust_child(args)
    else:
        asyncio.run(main(args))
