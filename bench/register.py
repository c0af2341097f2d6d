"""How the register cache scales: load time, Redis memory per number, lookups/s.

Writes a CSV of N Italian mobile numbers (20 % opposed), loads it with the
real ``callguard register load`` into an embedded Redis, reads the memory
delta from INFO, then times pipelined batch lookups of 500 intents (the
worker's lookup script) and projects the memory to Italy's register (about
30 million numbers) and the US national registry (about 258.5 million).

    ./dev bench register [--numbers 1000000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import redis

from callguard.embedded import start_redis
from callguard.stores import Query, Stores

ITALY = 30_000_000
US = 258_500_000


def number(i: int) -> str:
    return f"+39 3{20 + i % 80:02d} {i // 80:07d}"  # 320-399: mobile ranges


def spread(i: int, space: int) -> int:
    """The i-th of the sampled numbers: the multiplier is prime, so i -> spread(i)
    is a bijection of range(space): distinct numbers scattered over it."""
    return (i * 2_654_435_761) % space


def write_csv(path: Path, count: int, space: int) -> None:
    with path.open("w") as handle:
        handle.write("number,status,registered_at\n")
        for i in range(count):
            handle.write(f"{number(spread(i, space))},{'opposed,2023-05-01' if i % 5 == 0 else 'clear,'}\n")


async def lookups(url: str, count: int, space: int, seconds: float) -> list[float]:
    stores = Stores.from_url(url, timeout=10)
    rng = random.Random(3)
    rates = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = [
                Query(number(spread(rng.randrange(count), space)).replace(" ", ""), "acme", "op-1") for _ in range(500)
            ]
            started = time.perf_counter()
            await stores.lookup(batch)
            rates.append(500 / (time.perf_counter() - started))
    finally:
        await stores.close()
    return rates


def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="callguard-register-"))
    csv_path = workdir / "register.csv"
    # numbers scattered like a real register: Italy's ~30 M among ~800 M mobile numbers
    space = max(args.numbers, int(args.numbers / args.density))
    write_csv(csv_path, args.numbers, space)
    server = start_redis(workdir)
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis(port=server.port)
        before = int(client.info("memory")["used_memory"])
        today = datetime.now(ZoneInfo("Europe/Rome")).date().isoformat()
        env = {**os.environ, "CALLGUARD_REDIS_URL": url}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "callguard", "register", "load", str(csv_path), "--as-of", today],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        after = int(client.info("memory")["used_memory"])
        per_number = (after - before) / args.numbers
        print(
            f"loaded {args.numbers:,} numbers in {elapsed:.1f}s ({args.numbers / elapsed:,.0f} numbers/s, CLI included)"
        )
        print(f"redis memory: {after - before:,} bytes, {per_number:.1f} bytes per number")
        print(f"projection at this density: Italy (30 M) {per_number * ITALY / 2**30:.2f} GiB, "
              f"US (258.5 M) {per_number * US / 2**30:.2f} GiB")  # fmt: skip
        rates = asyncio.run(lookups(url, args.numbers, space, args.seconds))
        print(
            f"lookups (batches of 500, one script call each): median {statistics.median(rates):,.0f}/s over {len(rates)} batches"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--density", type=float, default=0.04, help="share of the numbering space registered")
    main(parser.parse_args())
