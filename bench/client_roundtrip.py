"""Round trip of ``GuardClient.check()``: p50/p99 latency at N concurrent calls.

Starts an embedded broker and Redis, loads a register (20 % opposed) and
operators, starts a real ``callguard worker`` process, then runs rounds of
``--concurrency`` simultaneous checks through one client (one producer, one
consumer) and times each call from ``check()`` to its decision: publish,
the worker's batch, Redis lookup, decision and audit publish, and the
decision read back. Prints the percentiles over all rounds (after one
warm-up round), split at the decision's ``decided_at`` into the worker's
part and the client's part, and a single-check latency for comparison.

On the embedded Tansu broker a fetch is answered only when its
``fetch_max_wait_ms`` runs out, even when data is waiting (Apache Kafka
answers as soon as data arrives): the worker's consumer, which Faust builds
with ``fetch_max_wait_ms=1500``, then dominates the round trip here. The
figures are for comparing changes on this setup, not a production latency.

    ./dev bench client_roundtrip [--concurrency 500] [--rounds 20] [--fetch-max-wait-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from callguard.client import GuardClient, GuardDecision
from callguard.core.facts import Operator
from callguard.dev.embedded import Embedded, free_port, wait_healthy
from callguard.storage.factory import open_stores

REGISTER = 20_000


def number(i: int) -> str:
    return f"+39347{i:07d}"


async def load_data(redis_url: str, today: date) -> None:
    stores = open_stores(redis_url, timeout=30)
    await stores.add_register_results(((number(i), i % 5 == 0, None) for i in range(REGISTER)), today, "*")
    await stores.replace_operators([Operator("op-bench", "active", date(2024, 1, 1), date(2030, 1, 1))], "bench")
    await stores.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, seconds: list[float]) -> str:
    ms = [value * 1000 for value in seconds]
    return (
        f"{label:<34} p50 {percentile(ms, 0.50):7.1f} ms   p90 {percentile(ms, 0.90):7.1f} ms   "
        f"p99 {percentile(ms, 0.99):7.1f} ms   max {max(ms):7.1f} ms"
    )


async def measure(broker: str, concurrency: int, rounds: int, fetch_max_wait_ms: int) -> None:
    async with GuardClient(broker, timeout=30, intent_prefix="bench-", fetch_max_wait_ms=fetch_max_wait_ms) as guard:

        async def one(i: int) -> tuple[float, float]:
            """Round trip, and its part after the worker decided (decided_at, ms precision)."""
            started = time.perf_counter()
            result = await guard.check(number(i % REGISTER), "op-bench", "acme")
            received, now = time.perf_counter(), time.time()
            if not isinstance(result, GuardDecision):
                raise RuntimeError(f"no decision: {result}")
            decided = datetime.fromisoformat(result.decided_at.replace("Z", "+00:00")).timestamp()
            return received - started, max(now - decided, 0.0)

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up: connections, caches
        single = [await one(i) for i in range(50)]
        timings: list[tuple[float, float]] = []
        started = time.perf_counter()
        for r in range(rounds):
            timings += await asyncio.gather(*(one(r * concurrency + i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    print(summary("one check at a time (50)", [total for total, _ in single]))
    print(
        f"{concurrency} concurrent x {rounds} rounds: {len(timings):,} checks, {len(timings) / elapsed:,.0f} checks/s"
    )
    print(summary("  check() round trip", [total for total, _ in timings]))
    print(summary("  of which: intent -> decided", [total - after for total, after in timings]))
    print(summary("  of which: decided -> client", [after for _, after in timings]))


def main(args: argparse.Namespace) -> None:
    with Embedded(workdir=Path(tempfile.mkdtemp(prefix="callguard-bench-client-"))) as embedded:
        asyncio.run(load_data(embedded.redis_url, datetime.now(ZoneInfo("Europe/Rome")).date()))
        port = free_port()
        env = {"CALLGUARD_BROKER": embedded.broker_url, "CALLGUARD_REDIS_URL": embedded.redis_url,
               "CALLGUARD_WEB_PORT": str(port), "PATH": "/usr/bin:/bin"}  # fmt: skip
        with (embedded.workdir / "worker.log").open("wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
        try:
            wait_healthy(port, worker)
            print(f"worker ready; register of {REGISTER:,} numbers; embedded Tansu broker and Redis on loopback\n")
            asyncio.run(measure(embedded.broker_url, args.concurrency, args.rounds, args.fetch_max_wait_ms))
        finally:
            worker.terminate()
            worker.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=100, help="the client's (see GuardClient)")
    main(parser.parse_args())
