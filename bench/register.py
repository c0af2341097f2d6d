"""How the register scales: load time, Redis memory per number, lookups/s.

Writes (once, then reuses) a CSV of N Italian mobile numbers scattered over the
numbering space like a real register (Italy: about 30 M registered among about
800 M mobile numbers, a density of 4 %), 20 % opposed with registration days
spread since the mobile register opened (2022-07-27), in canonical E.164.
Loads it with the real ``callguard register load`` into an embedded Redis
(a fresh load, then a full reload with a newer ``--as-of``, which replaces
every result), reads the memory per number from INFO ``used_memory`` deltas,
times batch lookups of 500 intents through the worker's lookup script, and
projects the memory to Italy's register (30 M) and the US national registry
(258.5 M).

With ``--compare-old`` (default up to 2 M numbers) the same rows are also
written in the previous layout (one hash field per number, 100 numbers a
hash, ``as_of|o|registered_at`` strings) into a second embedded Redis in the
same run: its memory per number and its lookup rate are printed beside the
new ones, and its load rate is estimated from the old parser (libphonenumber
for every line) timed on a sample.

With ``--directory FRACTION`` (default 0.5) it then loads a public-directory
extract of that share of the register's numbers with ``callguard directory
load`` (a fresh load, then a reload that replaces it), prints its load time
and Redis memory per listed number, and times the lookups again with it in
the buckets (the same GET answers both).

With ``--cluster`` it also loads the file into a 3-node Redis Cluster
(embedded, ``redis+cluster://``) and times the same lookups there.

    ./dev bench register [--numbers 1000000] [--density 0.04] [--seconds 5] [--runs 1] [--cluster]
    ./dev bench register --numbers 30000000 --csv /tmp/rpo-30m.csv

With ``--register us-dnc`` it measures a register loaded under its own name
instead: the US National Do Not Call Registry as the FTC ships it (a flat file
of ``AAA,NNNNNNN`` lines, no registration dates). It writes N numbers of the
United States' area codes (libphonenumber's geocoder lists 355, 354 with every exchange valid; with 800
exchanges each, 2.8 billion numbers) at ``--density`` (default 0.092: 258.5 M
of them), using as many area codes as that density needs, so that a scaled run
has the full registry's numbers per bucket. It loads the file with ``callguard
register load FILE --register us-dnc``, fresh and then as a replacement,
prints the load time, Redis memory per number and lookups/s, and extrapolates
both to the 258.5 M numbers (linearly, and says so) unless N is 258.5 M:

    ./dev bench register --register us-dnc --numbers 258500000
    ./dev bench register --register us-dnc --numbers 25850000   # a tenth, extrapolated
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
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import redis

from callguard.core.numbers import libphonenumber_e164
from callguard.dev.embedded import RedisCluster, Server, start_redis, start_redis_cluster
from callguard.storage.factory import open_stores
from callguard.storage.keys import HIDDEN_KEY, callee_key, register_key
from callguard.storage.scripts import REGISTER_LOOKUP
from callguard.storage.stores import Query

ITALY = 30_000_000
US = 258_500_000
BATCH = 500
MOBILE_REGISTER_OPENED = date(2022, 7, 27)


def number(i: int) -> str:
    """The i-th number of the mobile space +39 320 000 0000 … +39 399 999 9999."""
    return f"+393{20 + i % 80:02d}{i // 80:07d}"


def spread(i: int, space: int) -> int:
    """The i-th sampled number: the multiplier is prime, so i -> spread(i) is a
    bijection of range(space): distinct numbers scattered over it."""
    return (i * 2_654_435_761) % space


def write_csv(path: Path, count: int, space: int, opposed: float) -> None:
    rng = random.Random(3)
    days = (date(2026, 11, 1) - MOBILE_REGISTER_OPENED).days
    registered = [(MOBILE_REGISTER_OPENED + timedelta(days=d)).isoformat() for d in range(days)]
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as handle:
        handle.write("number,status,registered_at\n")
        lines = []
        for i in range(count):
            if rng.random() < opposed:
                lines.append(f"{number(spread(i, space))},opposed,{registered[rng.randrange(days)]}\n")
            else:
                lines.append(f"{number(spread(i, space))},clear,\n")
            if len(lines) >= 100_000:
                handle.write("".join(lines))
                lines = []
        handle.write("".join(lines))
    tmp.rename(path)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def load(url: str, csv_path: Path, as_of: date, kind: str = "register") -> float:
    """Seconds ``callguard {kind} load`` takes, as a user runs it."""
    env = {**os.environ, "CALLGUARD_REDIS_URL": url}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "callguard", kind, "load", str(csv_path), "--as-of", as_of.isoformat()],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return elapsed


def write_directory_csv(register_csv: Path, fraction: float) -> tuple[Path, int]:
    """Every number of the register CSV whose position falls in ``fraction``."""
    path = register_csv.with_name(register_csv.stem + f"-directory-{fraction}.csv")
    step = max(1, round(1 / fraction)) if fraction < 1 else 1
    count = 0
    with register_csv.open() as source, path.open("w") as target:
        next(source)
        target.write("number\n")
        for n, line in enumerate(source):
            if n % step == 0:
                target.write(line.split(",", 1)[0] + "\n")
                count += 1
    return path, count


def batches(count: int, space: int, rounds: int) -> list[list[str]]:
    rng = random.Random(7)
    return [[number(spread(rng.randrange(count), space)) for _ in range(BATCH)] for _ in range(rounds)]


async def lookup_rates(url: str, numbers: list[list[str]], seconds: float) -> list[float]:
    """Batches of 500 through ``Stores.lookup`` (the worker's call: one script, replies parsed into facts)."""
    stores = open_stores(url, timeout=10)
    rates = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for batch in numbers:
                queries = [Query(callee, "acme", "op-1") for callee in batch]
                started = time.perf_counter()
                await stores.lookup(queries)
                rates.append(BATCH / (time.perf_counter() - started))
    finally:
        await stores.close()
    return rates


# --- the previous layout, for comparison in the same run -------------------------

# The register part of the previous lookup script: a hash per E.164 minus its
# last two digits, a field per number and scope. The callee part is the same.
OLD_LOOKUP = """
local out = {}
for i = 1, #KEYS, 2 do
  local suffix, client = ARGV[i], ARGV[i + 1]
  out[#out + 1] = redis.call('HMGET', KEYS[i], suffix, suffix .. ':' .. client)
  out[#out + 1] = redis.call('HMGET', KEYS[i + 1], 'consent:' .. client, 'contract:' .. client,
                             'optout:' .. client, 'optout:*', 'calls:' .. client, 'silent:' .. client)
end
return out
"""

NEW_LOOKUP = (
    REGISTER_LOOKUP
    + """
reg_hidden_key = KEYS[1]
local out = {}
for i = 2, #KEYS, 2 do
  local suffix, client = ARGV[i - 1], ARGV[i]
  out[#out + 1] = register(KEYS[i], tonumber(suffix), client)
  out[#out + 1] = redis.call('HMGET', KEYS[i + 1], 'consent:' .. client, 'contract:' .. client,
                             'optout:' .. client, 'optout:*', 'calls:' .. client, 'silent:' .. client)
end
return out
"""
)


def old_key(e164: str) -> tuple[str, str]:
    return "cg:reg:" + e164[:-2], e164[-2:]


def write_old(client: redis.Redis, csv_path: Path, as_of: date) -> None:
    with csv_path.open() as handle, client.pipeline(transaction=False) as pipe:
        next(handle)
        for n, line in enumerate(handle, 1):
            e164, status, registered = line.rstrip("\n").split(",")
            key, field = old_key(e164)
            pipe.hset(key, field, f"{as_of.isoformat()}|{'o' if status == 'opposed' else 'c'}|{registered}")
            if n % 10_000 == 0:
                pipe.execute()
        pipe.execute()


def script_rates(
    client: redis.Redis, script: str, key_of: Any, numbers: list[list[str]], seconds: float, first: tuple[str, ...] = ()
) -> list[float]:
    """Batches of 500 through a bare script (the register and callee reads only);
    ``first``: keys before the numbers' (the new script's hidden loads)."""
    run = client.register_script(script)
    rates = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for batch in numbers:
            keys: list[str] = [*first]
            args: list[str] = []
            for e164 in batch:
                bucket, suffix = key_of(e164)
                keys += (bucket, callee_key(e164))
                args += (str(suffix), "acme")
            started = time.perf_counter()
            run(keys=keys, args=args)
            rates.append(BATCH / (time.perf_counter() - started))
    return rates


def old_parse_rate(csv_path: Path, sample: int = 50_000) -> float:
    """Lines a second of the previous loader's per-line parsing (libphonenumber)."""
    with csv_path.open() as handle:
        next(handle)
        lines = [next(handle) for _ in range(sample)]
    libphonenumber_e164.cache_clear()
    started = time.perf_counter()
    for line in lines:
        libphonenumber_e164(line.split(",", 1)[0], "IT")
    return sample / (time.perf_counter() - started)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- a register loaded under its own name: the US National Do Not Call Registry ----------------


def us_area_codes() -> list[str]:
    """The area codes libphonenumber's geocoder places in the United States
    whose exchanges 200-999 are all valid (a few restrict their exchanges)."""
    import re

    from phonenumbers.geodata import GEOCODE_DATA

    from callguard.core.numbers import nanp_national_pattern, region_of

    valid = re.compile(nanp_national_pattern() + r"\d{10}")
    codes = []
    for key in sorted(GEOCODE_DATA):
        area = key[1:]
        if (
            key.startswith("1")
            and len(key) == 4
            and region_of(f"+1{area}2345678") == "US"
            and all(valid.fullmatch(f"{area}{exchange}5678") for exchange in range(200, 1000))
        ):
            codes.append(area)
    return codes


def us_number(i: int, areas: list[str]) -> str:
    """The i-th number of the space: area code, exchange 200-999, line (ten digits)."""
    line, rest = i % 10_000, i // 10_000
    exchange, area = 200 + rest % 800, rest // 800
    return f"{areas[area]}{exchange:03d}{line:04d}"


def registered(j: int, count: int, space: int) -> int:
    """The j-th registered number (in order): one in each of ``count`` equal
    strata of the space, at a scattered place in its stratum."""
    stride = max(1, space // count)
    return j * space // count + (j * 2_654_435_761) % stride


def write_ftc(path: Path, count: int, space: int, areas: list[str]) -> None:
    """The FTC's flat file: ``AAA,NNNNNNN`` a line, sorted by number like the FTC's area-code files."""
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as handle:
        lines = []
        for j in range(count):
            n = us_number(registered(j, count, space), areas)
            lines.append(f"{n[:3]},{n[3:]}\n")
            if len(lines) >= 100_000:
                handle.write("".join(lines))
                lines = []
        handle.write("".join(lines))
    tmp.rename(path)


#: CPU seconds (user + system) of the last load_named's CLI and its processes
LAST_CPU = [0.0]


def load_named(url: str, path: Path, name: str, as_of: date) -> float:
    import resource

    env = {**os.environ, "CALLGUARD_REDIS_URL": url}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "callguard", "register", "load", str(path), "--register", name, "--as-of", str(as_of)],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return elapsed


async def named_lookup_rates(url: str, name: str, numbers: list[list[str]], seconds: float) -> tuple[list[float], int]:
    """Batches of 500 US callees through ``Stores.lookup`` reading the named register; how many were listed."""
    stores = open_stores(url, timeout=10)
    rates = []
    listed = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for batch in numbers:
                queries = [Query(callee, "acme", "op-1", registers=(name,)) for callee in batch]
                started = time.perf_counter()
                facts = await stores.lookup(queries)
                rates.append(BATCH / (time.perf_counter() - started))
                listed += sum(f.registers[name].listed for f in facts)
    finally:
        await stores.close()
    return rates, listed


def main_named(args: argparse.Namespace) -> None:
    areas = us_area_codes()
    density = args.density if args.density_given else 0.092
    space = max(args.numbers, int(args.numbers / density))
    used = -(-space // 8_000_000)
    if used > len(areas):
        raise SystemExit(
            f"--density {density}: {args.numbers:,} numbers need {used} area codes, the US has {len(areas)}"
        )
    space = min(space, used * 8_000_000)
    path = args.csv or Path(tempfile.gettempdir()) / f"callguard-{args.register}-{args.numbers}-{density}-sorted.txt"
    if not path.exists():
        started = time.perf_counter()
        write_ftc(path, args.numbers, space, areas)
        print(f"wrote {path} ({path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.0f}s")
    else:
        print(f"using {path} ({path.stat().st_size / 2**20:,.0f} MiB)")
    print(
        f"{args.numbers:,} numbers of {used} area codes ({space:,} numbers, density {args.numbers / space:.3f}; "
        f"the registry: 258.5 M of the {len(areas)} area codes' {len(areas) * 8_000_000:,})"
    )
    workdir = Path(tempfile.mkdtemp(prefix="callguard-bench-named-"))
    server = start_redis(workdir)
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis(port=server.port)
        fresh, reload, per_number, cpu = [], [], [], []
        for run in range(args.runs):
            client.flushall()
            before = used_memory(client)
            fresh.append(load_named(url, path, args.register, date(2026, 11, 1)))
            cpu.append(LAST_CPU[0])
            per_number.append((used_memory(client) - before) / args.numbers)
            if not args.no_reload:
                reload.append(load_named(url, path, args.register, date(2026, 11, 2)))
            print(
                f"run {run + 1}: fresh load {fresh[-1]:.1f}s, "
                + (f"replacing load {reload[-1]:.1f}s, " if reload else "")
                + f"{per_number[-1]:.2f} bytes a number"
            )
        memory = median(per_number)
        after = (used_memory(client) - before) / args.numbers
        peak = int(client.info("memory")["used_memory_peak"])
        rate = args.numbers / median(fresh)
        print(
            f"register load --register {args.register}: {args.numbers:,} numbers in {median(fresh):.1f}s "
            f"({rate:,.0f} numbers/s, the CLI as a user runs it, reading and validation included)"
            + (f"; replacing load {median(reload):.1f}s" if reload else "")
        )
        print(
            f"redis memory: {memory:.2f} bytes a number (used_memory delta; {after:.2f} after the replacement; "
            f"peak while staging {peak / 2**20:,.0f} MiB)"
        )
        per_cpu = median(cpu) / args.numbers
        cores = os.cpu_count() or 1
        print(
            f"CPU of the load (the CLI and its processes, Redis not included): {per_cpu * 1e6:.2f} us a number; "
            f"on {cores} cores busy with nothing else that is {per_cpu / cores * US / 60:.1f} min for 258.5 M "
            f"(load average during the run: {os.getloadavg()[0]:.1f})"
        )
        if args.numbers < US:
            print(
                f"extrapolated (linearly, from this scaled run of {args.numbers:,}) to the registry's 258.5 M: "
                f"load {US / rate / 60:.1f} min at this run's rate, {memory * US / 2**30:.2f} GiB of Redis at "
                f"{memory:.2f} bytes a number"
            )
        else:
            print(f"the registry's 258.5 M: load {median(fresh) / 60:.1f} min, {memory * US / 2**30:.2f} GiB of Redis")
        rng = random.Random(7)
        numbers = [
            ["+1" + us_number(registered(rng.randrange(args.numbers), args.numbers, space), areas) if k % 2 else
             "+1" + us_number(rng.randrange(space), areas) for k in range(BATCH)]
            for _ in range(50)
        ]  # fmt: skip
        rates, listed = asyncio.run(named_lookup_rates(url, args.register, numbers, args.seconds))
        print(
            f"lookups via Stores.lookup reading {args.register} (batches of {BATCH}, half of them registered "
            f"numbers): median {median(rates):,.0f}/s over {len(rates)} batches ({listed:,} listed answers)"
        )
    finally:
        server.stop()


def main(args: argparse.Namespace) -> None:
    if args.register:
        main_named(args)
        return
    space = max(args.numbers, int(args.numbers / args.density))
    csv_path = args.csv or Path(tempfile.gettempdir()) / f"callguard-register-{args.numbers}-{args.density}.csv"
    if not csv_path.exists():
        started = time.perf_counter()
        write_csv(csv_path, args.numbers, space, args.opposed)
        print(f"wrote {csv_path} ({csv_path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.0f}s")
    else:
        print(f"using {csv_path} ({csv_path.stat().st_size / 2**20:,.0f} MiB)")
    compare = args.compare_old if args.compare_old is not None else args.numbers <= 2_000_000
    workdir = Path(tempfile.mkdtemp(prefix="callguard-bench-register-"))
    servers: list[Server | RedisCluster] = []
    try:
        (workdir / "new").mkdir()
        (workdir / "old").mkdir()
        server = start_redis(workdir / "new")
        servers.append(server)
        url = f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis(port=server.port)
        fresh, reload, per_number = [], [], []
        for run in range(args.runs):
            client.flushall()
            before = used_memory(client)
            fresh.append(load(url, csv_path, date(2026, 11, 1)))
            per_number.append((used_memory(client) - before) / args.numbers)
            if not args.no_reload:
                reload.append(load(url, csv_path, date(2026, 11, 2)))
            print(
                f"run {run + 1}: fresh load {fresh[-1]:.1f}s, "
                + (f"full reload {reload[-1]:.1f}s, " if reload else "")
                + f"{per_number[-1]:.2f} bytes a number"
            )
        memory = median(per_number)
        after_reload = (used_memory(client) - before) / args.numbers
        peak = int(client.info("memory")["used_memory_peak"])
        print(
            f"loaded {args.numbers:,} numbers: fresh {median(fresh):.1f}s ({args.numbers / median(fresh):,.0f} numbers/s)"
            + (f", full reload {median(reload):.1f}s ({args.numbers / median(reload):,.0f}/s)" if reload else "")
            + " (median; the CLI as a user runs it, parsing and validation included)"
        )
        print(
            f"redis memory: {memory:.2f} bytes a number (used_memory delta; {after_reload:.2f} after the reload; "
            f"peak while staging {peak / 2**20:,.0f} MiB)"
        )
        print(f"projection: Italy (30 M) {memory * ITALY / 2**30:.2f} GiB, US (258.5 M) {memory * US / 2**30:.2f} GiB")
        numbers = batches(args.numbers, space, 50)
        rates = asyncio.run(lookup_rates(url, numbers, args.seconds))
        print(
            f"lookups via Stores.lookup (batches of {BATCH}): median {median(rates):,.0f}/s over {len(rates)} batches"
        )
        new_rates = script_rates(client, NEW_LOOKUP, register_key, numbers, args.seconds, (HIDDEN_KEY,))
        print(f"register + callee script alone: median {median(new_rates):,.0f}/s")
        if args.directory > 0:
            directory_csv, listed = write_directory_csv(csv_path, args.directory)
            before = used_memory(client)
            fresh_directory = load(url, directory_csv, date(2026, 11, 2), "directory")
            directory_memory = (used_memory(client) - before) / listed
            replace_directory = load(url, directory_csv, date(2026, 11, 3), "directory")
            after_replace = (used_memory(client) - before) / listed
            with_directory = asyncio.run(lookup_rates(url, numbers, args.seconds))
            print(
                f"directory extract of {listed:,} numbers: fresh load {fresh_directory:.1f}s "
                f"({listed / fresh_directory:,.0f}/s), replacing load {replace_directory:.1f}s; "
                f"{directory_memory:.2f} bytes a listed number ({after_replace:.2f} after the replacement); "
                f"lookups via Stores.lookup with it: median {median(with_directory):,.0f}/s "
                f"({median(with_directory) / median(rates):.2f}x the rate without, same run)"
            )
        if compare:
            old_server = start_redis(workdir / "old")
            servers.append(old_server)
            old = redis.Redis(port=old_server.port)
            before = used_memory(old)
            started = time.perf_counter()
            write_old(old, csv_path, date(2026, 11, 1))
            written = time.perf_counter() - started
            old_memory = (used_memory(old) - before) / args.numbers
            old_rates = script_rates(old, OLD_LOOKUP, old_key, numbers, args.seconds)
            parse_rate = old_parse_rate(csv_path)
            print(
                f"previous layout, same rows: {old_memory:.1f} bytes a number ({old_memory / memory:.1f}x); "
                f"register + callee script median {median(old_rates):,.0f}/s "
                f"(new/old {median(new_rates) / median(old_rates):.2f}); its parser {parse_rate:,.0f} lines/s, "
                f"so a load of these rows about {args.numbers / parse_rate + written:.0f}s "
                f"(new: {median(fresh):.1f}s)"
            )
        if args.cluster:
            cluster = start_redis_cluster(workdir / "cluster")
            servers.append(cluster)
            cluster_load = load(cluster.url, csv_path, date(2026, 11, 1))
            cluster_rates = asyncio.run(lookup_rates(cluster.url, numbers, args.seconds))
            print(
                f"3-node Redis Cluster: load {cluster_load:.1f}s; lookups via Stores.lookup median "
                f"{median(cluster_rates):,.0f}/s (one Redis: {median(rates):,.0f}/s, same run)"
            )
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument(
        "--density", type=float, default=None, help="share of the numbering space registered (0.04; us-dnc 0.092)"
    )
    parser.add_argument("--register", help="a register loaded under its own name, e.g. us-dnc (the FTC's flat file)")
    parser.add_argument("--opposed", type=float, default=0.2, help="share of the numbers opposed")
    parser.add_argument("--csv", type=Path, help="the CSV to load (written there first when missing)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of lookups")
    parser.add_argument("--runs", type=int, default=1, help="loads to time (median)")
    parser.add_argument("--no-reload", action="store_true", help="skip the full reload")
    parser.add_argument("--compare-old", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--cluster", action="store_true", help="also on a 3-node Redis Cluster")
    parser.add_argument(
        "--directory", type=float, default=0.5, help="share of the numbers in a directory extract (0: none)"
    )
    parsed = parser.parse_args()
    parsed.density_given = parsed.density is not None
    parsed.density = parsed.density if parsed.density is not None else 0.04
    main(parsed)
