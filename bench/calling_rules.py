"""What the Italian calling rules cost per intent, in the guard's shell.

Runs :meth:`callguard.worker.guard.Guard.handle_intents` in process on batches of
500 intents against an embedded Redis (a register with 20 % opposed,
consents, opt-outs, 50 operators with caller IDs), with a ``send`` that
acknowledges at once, so only the shell is timed: decode, one Redis lookup
per batch, the pure policy, the record script for allows, the audit chain.
Two policies alternate in the same run on the same data:

- ``core``: register, operator and do-not-call rules (tests/policies/core.toml);
- ``full``: every rule of the Italian policy with calling hours open around
  the clock (tests/policies/open-hours.toml), so the result does not depend on
  the hour: caller IDs, calling hours, frequency caps (one more Redis script
  per batch, for the allows), silent calls.

With the United States pack two more run beside them:

- ``set``: the same Italian intents under a policy set (Italy: ``full``'s
  pack; the US: the US pack with open hours): the cost of choosing the pack;
- ``us``: intents to New York numbers under that set, decided by the US pack
  with the National Do Not Call Registry loaded under ``us-dnc`` (20 %
  listed, a written consent for some): its lookup reads the register's
  coverage in the same script.

Every intent goes to a new callee, so no cap is reached: the figure is the
cost of checking and counting, not of denying.

    ./dev bench calling_rules [--batches 40] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

from callguard.core.facts import Consent, Operator, OptOut
from callguard.core.policyfile import load_policy
from callguard.dev.embedded import start_redis
from callguard.storage.factory import open_stores
from callguard.storage.register import RegisterRows
from callguard.storage.stores import Stores
from callguard.worker.guard import Guard, Raw

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {"core": ROOT / "tests" / "policies" / "core.toml", "full": ROOT / "tests" / "policies" / "open-hours.toml"}
BATCH = 500
CALLER_ID = "+390844000001"


def number(i: int) -> str:
    return f"+39347{i:07d}"


def us_number(i: int) -> str:
    return f"+1212{2_000_000 + i:07d}"


US_OPEN = 'base = "us"\nversion = "bench-us"\n[rules.calling_hours]\nwindow = "00:00-24:00"\nstate_windows = []\n'


async def load(stores: Stores, size: int, today: date) -> None:
    rows = ((number(i), i % 5 == 0, date(2023, 5, 1) if i % 10 == 0 else None) for i in range(size))
    await stores.add_register_results(rows, today, "*")
    operators = [
        Operator(f"op-{n}", "active" if n < 45 else "suspended", date(2024, 1, 1), date(2030, 1, 1), (CALLER_ID,))
        for n in range(50)
    ]
    await stores.replace_operators(operators, "bench")
    await stores.upsert_consents(
        [(number(i), Consent("acme", "consent", date(2025, 1, 1))) for i in range(0, size, 50)]
    )
    await stores.add_optouts([(number(i), OptOut("*", date(2025, 1, 1))) for i in range(7, size, 100)])
    spill = RegisterRows.from_rows(((us_number(i), False, None) for i in range(0, size, 5)), expected=size // 5)
    try:
        await stores.load_named_register(spill, "us-dnc", today, entry={"file": "bench"})
    finally:
        spill.cleanup()
    await stores.upsert_consents(
        [(us_number(i), Consent("acme", "consent", date(2025, 1, 1))) for i in range(0, size, 10)]
    )


async def acknowledged(messages: Sequence[tuple[str, bytes | None, bytes, int | None]]) -> list[tuple[int, int]]:
    """A broker that acknowledges everything at once: (partition, offset) per message."""
    return [(partition or 0, 0) for _, _, _, partition in messages]


def batches(start: int, count: int, us: bool = False) -> list[list[Raw]]:
    out = []
    for b in range(count):
        batch = []
        for n in range(BATCH):
            i = start + b * BATCH + n
            intent = {
                "intent_id": f"cr-{i}",
                "callee": us_number(i) if us else number(i),
                "operator_id": f"op-{i % 50}",
                "client_id": "acme" if i % 3 else "beta",
                "purpose": "marketing",
                "caller_id": CALLER_ID,
            }
            batch.append(Raw(orjson.dumps(intent), "callguard.intents", i % 6, i, None))
        out.append(batch)
    return out


async def run(args: argparse.Namespace) -> None:
    size = args.batches * BATCH * (args.runs * 2 + 1)
    with tempfile.TemporaryDirectory() as workdir:
        server = start_redis(Path(workdir))
        try:
            stores = open_stores(f"redis://127.0.0.1:{server.port}/0", timeout=10)
            print(f"loading a register of {size:,} numbers into an embedded Redis…", flush=True)
            await load(stores, size, datetime.now(UTC).date())
            guards = {name: Guard(stores, acknowledged, load_policy(path), "IT") for name, path in POLICIES.items()}
            (Path(workdir) / "us-open.toml").write_text(US_OPEN)
            (Path(workdir) / "set.toml").write_text(
                f'version = "bench-set"\n[countries]\nIT = "{POLICIES["full"]}"\nUS = "us-open.toml"\n'
                f'[other_countries]\ndeny = ["marketing"]\npack = "{POLICIES["full"]}"\n'
            )
            guards["set"] = guards["us"] = Guard(stores, acknowledged, load_policy(Path(workdir) / "set.toml"), "IT")
            rates: dict[str, list[float]] = {name: [] for name in guards}
            allowed: dict[str, int] = {name: 0 for name in guards}
            start = 0
            # warm up the caches (numbers, operators) once, outside the timing
            for batch in batches(start, 2):
                await guards["core"].handle_intents(batch)
            start += 2 * BATCH
            for _ in range(args.runs):
                for name, guard in guards.items():
                    work = batches(start, args.batches, us=name == "us")
                    start += args.batches * BATCH
                    began = time.perf_counter()
                    for batch in work:
                        decisions = await guard.handle_intents(batch)
                        allowed[name] += sum(d.allow for d in decisions)
                    elapsed = time.perf_counter() - began
                    rates[name].append(args.batches * BATCH / elapsed)
            await stores.close()
        finally:
            server.stop()
    core, full = statistics.median(rates["core"]), statistics.median(rates["full"])
    under_set, us = statistics.median(rates["set"]), statistics.median(rates["us"])
    for name, median in (("core", core), ("full", full), ("set", under_set), ("us", us)):
        runs = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(
            f"{name:>5}: {median:,.0f} intents/s ({1e6 / median:.1f} us/intent; runs {runs}; allowed {allowed[name]:,})"
        )
    print(f"full / core: {full / core:.2f} (the calling rules' cost in the shell, same run, same Redis)")
    print(f"set / full: {under_set / full:.2f} (choosing the pack by the callee's country, Italian callees)")
    print(f"us / full: {us / full:.2f} (a US callee by the US pack against an Italian one by the Italian pack)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="batches of 500 intents per run and policy")
    parser.add_argument("--runs", type=int, default=5, help="runs per policy (alternating); medians are printed")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
