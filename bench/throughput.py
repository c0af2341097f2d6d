"""Decisions per second of a callguard worker vs. a raw aiokafka pass-through.

Both run on the same embedded broker and Redis, on the same pre-published
intents, one after the other in every run, so the ratio is meaningful on a
noisy machine. The data and the intent mix are ``bench/mix.py``'s: a
register of ``--register`` numbers (20 % opposed), consents, contracts,
opt-outs, 50 operators with declared caller IDs; the worker decides by the
Italian policy with calling hours open around the clock (every rule runs).

- baseline: one aiokafka consumer + producer that only decodes each intent
  with orjson, re-encodes it and forwards it, gathering the sends of each
  fetch and committing after each (what a guard that decides nothing costs);
- volume baseline: the same, also writing a record of an audit record's size
  per intent (callguard's output volume without its work: how much of the
  gap is the bytes callguard must write);
- callguard: a real ``callguard worker`` process (new consumer group each
  run; two outputs per intent, decision and audit record, plus the Redis
  lookup and the record of allowed calls), timed by the broker timestamps of
  its first and last decision (so the group join and the reader's fetch
  waits are not counted);
- ``--compare SRC``: also a worker run from another source tree (for example
  ``git worktree add /tmp/before main`` and ``--compare /tmp/before/src``),
  for a before/after in the same run; ``--variant LABEL:NAME=VALUE,...``:
  also this source tree with other settings (``workers=N``: N workers);
- ``--workers N``: N workers in one consumer group per variant (scale-out on
  this machine: they share its cores with the broker, Redis and this script).

    ./dev bench throughput [--intents 200000] [--register 1000000] [--runs 3] [--broker kafka|tansu]
                           [--compare SRC] [--variant LABEL:NAME=VALUE,...] [--worker-env NAME=VALUE ...]
                           [--workers N] [--profile DIR]

The broker is Apache Kafka (one KRaft node, the jars ``./dev`` fetched) unless
``--broker tansu``.

``--profile DIR`` samples every worker with py-spy (``.venv/bin/pip install
py-spy``) and prints where its CPU time went (``bench/pyspy.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from mix import POLICY, intents, load_data
from pyspy import profiled, summary

from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Embedded, free_port

PARTITIONS = 6


async def publish(bootstrap: str, count: int, register_size: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in (INTENTS_TOPIC, DECISIONS_TOPIC)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=512 * 1024)
    await producer.start()
    futures = []
    for key, value in intents(count, register_size):
        futures.append(await producer.send(INTENTS_TOPIC, value, key=key))
        if len(futures) >= 20_000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    await producer.stop()


#: The median audit record's size in bytes (bench/mix.py's intents, Italian policy; decisions are about 220).
AUDIT_BYTES = 1700


async def baseline(bootstrap: str, count: int, run: int, volume: bool = False) -> float:
    """Events/s of a raw pass-through; ``volume``: it also writes an
    audit-sized record per event, i.e. callguard's output volume without its
    work (two records per intent, about 2 KB)."""
    consumer = AIOKafkaConsumer(
        INTENTS_TOPIC, bootstrap_servers=bootstrap, group_id=f"bench-baseline-{run}{'-volume' if volume else ''}",
        auto_offset_reset="earliest",
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
                    event = orjson.loads(record.value)
                    futures.append(await producer.send("bench.passthrough", orjson.dumps(event), key=record.key))
                    if volume:
                        padded = orjson.dumps({"event": event, "pad": "x" * (AUDIT_BYTES - len(record.value))})
                        futures.append(await producer.send("bench.passthrough.audit", padded, key=record.key))
                seen += len(records)
            await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
        return count / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rate: float  # decisions/s, first to last decision
    cpu_us: float  # worker CPU (all threads) per decision over the same span, µs


async def worker_run(
    embedded: Embedded, count: int, group: str, workdir: Path, src: str | None, extra_env: dict[str, str],
    profile: Path | None, count_workers: int = 1,
) -> Run:  # fmt: skip
    """Start ``count_workers`` workers (one new consumer group), rate their
    decisions by their broker timestamps and measure their CPU time (summed)
    per decision while they decide."""
    bootstrap = embedded.broker_url.split("://", 1)[1]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    partitions = [TopicPartition(DECISIONS_TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    for tp, end in (await consumer.end_offsets(partitions)).items():
        consumer.seek(tp, end)
    env = {
        "CALLGUARD_BROKER": embedded.broker_url,
        "CALLGUARD_REDIS_URL": embedded.redis_url,
        "CALLGUARD_WEB_PORT": str(free_port()),
        "CALLGUARD_APP_ID": group,
        "CALLGUARD_POLICY": POLICY,
        "CALLGUARD_SESSION_TIMEOUT": "3",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **({"PYTHONPATH": src} if src else {}),
        **extra_env,
    }
    launched_ms = int(time.time() * 1000)
    workers = []
    for n in range(count_workers):
        env["CALLGUARD_WEB_PORT"] = str(free_port())
        with (workdir / f"{group}-{n}.log").open("wb") as log:
            workers.append(
                subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
            )
    spies = (
        [profiled(w.pid, profile.with_name(f"{profile.stem}-w{n}.txt")) for n, w in enumerate(workers)]
        if profile
        else []
    )
    seen: set[bytes] = set()
    first = last = 0
    cpu_first = 0.0
    seen_first = 0
    try:
        while len(seen) < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    if record.timestamp < launched_ms:  # an earlier run's (end offsets can lag on some brokers)
                        continue
                    seen.add(record.key)
                    first = record.timestamp if not first else min(first, record.timestamp)
                    last = max(last, record.timestamp)
            if first and not cpu_first:
                cpu_first, seen_first = sum(cpu_seconds(w.pid) for w in workers), len(seen)
            for w in workers:
                if w.poll() is not None:
                    raise RuntimeError(f"a worker exited with {w.returncode}; see {workdir}/{group}-*.log")
        cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_first
        return Run((count - 1) / max((last - first) / 1000, 1e-3), cpu / max(count - seen_first, 1) * 1e6)
    finally:
        await consumer.stop()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
        for spy in spies:
            spy.wait(30)


async def main(args: argparse.Namespace) -> None:
    extra_env = dict(item.split("=", 1) for item in args.worker_env)
    with Embedded(workdir=Path(tempfile.mkdtemp(prefix="callguard-bench-")), broker_kind=args.broker) as embedded:
        print(f"broker: {'Apache Kafka' if args.broker == 'kafka' else 'Tansu'}")
        bootstrap = embedded.broker_url.split("://", 1)[1]
        today = datetime.now(ZoneInfo("Europe/Rome")).date()
        started = time.perf_counter()
        await load_data(embedded.redis_url, args.register, today)
        print(f"loaded a {args.register:,}-number register in {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        await publish(bootstrap, args.intents, args.register)
        print(f"published {args.intents:,} intents on {PARTITIONS} partitions in {time.perf_counter() - started:.1f}s")
        print(f"worker logs and profiles: {embedded.workdir}\n")
        variants: dict[str, tuple[str | None, dict[str, str]]] = {"callguard": (None, extra_env)}
        if args.compare:
            variants["compare"] = (str(Path(args.compare).resolve()), extra_env)
        for variant in args.variant:
            name, _, settings = variant.partition(":")
            variants[name] = (None, {**extra_env, **dict(item.split("=", 1) for item in settings.split(",") if item)})
        rates: dict[str, list[float]] = {"baseline": [], "volume": [], **{name: [] for name in variants}}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        profiles: list[Path] = []
        for run in range(args.runs):
            rates["baseline"].append(await baseline(bootstrap, args.intents, run))
            rates["volume"].append(await baseline(bootstrap, args.intents, run, volume=True))
            for name, (src, env) in variants.items():
                profile = args.profile / f"{name}-{run + 1}.txt" if args.profile else None
                if profile:
                    profile.parent.mkdir(parents=True, exist_ok=True)
                    profiles.append(profile)
                timed = await worker_run(
                    embedded,
                    args.intents,
                    f"bench-{name}-{run}",
                    embedded.workdir,
                    src,
                    {k: v for k, v in env.items() if k != "workers"},
                    profile,
                    int(env.get("workers", args.workers)),
                )
                rates[name].append(timed.rate)
                cpu[name].append(timed.cpu_us)
            print(
                f"run {run + 1}: baseline {rates['baseline'][-1]:>7,.0f}/s   volume {rates['volume'][-1]:>7,.0f}/s"
                + "".join(
                    f"   {name} {rates[name][-1]:>7,.0f}/s ({cpu[name][-1]:.0f} µs CPU each)" for name in variants
                )
            )
        medians = {name: statistics.median(values) for name, values in rates.items()}
        base = medians["baseline"]
        volume = medians["volume"]
        print(f"\nmedian of {args.runs}: baseline pass-through {base:,.0f} events/s")
        print(f"  pass-through with callguard's output volume (+{AUDIT_BYTES} B record each) {volume:,.0f} events/s")
        for name in variants:
            print(
                f"  {name:<10} {medians[name]:>9,.0f} decisions/s   ratio to baseline {medians[name] / base:.2f}"
                f"   to volume baseline {medians[name] / volume:.2f}"
                f"   worker CPU {statistics.median(cpu[name]):.0f} µs per decision"
            )
        for name in variants:
            if name != "callguard":
                print(f"  callguard / {name}: {medians['callguard'] / medians[name]:.2f}")
        for profile in profiles:
            for path in sorted(profile.parent.glob(f"{profile.stem}-w*.txt")):
                print("\n" + summary(path, top=30))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=200_000)
    parser.add_argument("--register", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare", metavar="SRC", help="also time a worker from this source tree (its src/)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
        help="also time a worker of this source tree with these settings (e.g. big:CALLGUARD_BATCH_SIZE=2000)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="workers per variant, in one consumer group")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy every worker, print where time goes")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka", help="the embedded broker to run on")
    asyncio.run(main(parser.parse_args()))
