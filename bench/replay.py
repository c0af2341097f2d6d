"""How fast ``callguard replay`` decides recorded audit records again, in one process.

Builds a pool of synthetic audit records the way the worker writes them
(:func:`callguard.core.policy.decide` on varied facts, :meth:`Decision.to_audit`,
chained by :func:`callguard.core.audit.link`: JSON bytes of about the production
size), then times :meth:`callguard.core.replay.Replay.add_bytes` over them: JSON
parsing, rebuilding intent and facts, the policy, the comparison and the
counts. Nothing else: no store, no broker (reading them is the command's I/O).

Two rows: the records' own policy (no change expected) and a stricter one
(a cap of one call a day: some allows become denies, so the change counters
and examples are in the figure too). Medians of ``--runs``.

    ./dev bench replay [--records 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from callguard.core.audit import GENESIS, link
from callguard.core.facts import Consent, Facts, Mandate, Operator, OptOut, PastCall, RegisterResult
from callguard.core.numbers import normalise_caller_id
from callguard.core.policy import CapLimit, PolicySettings, decide
from callguard.core.policyfile import load_policy
from callguard.core.replay import Replay
from callguard.core.schema import Intent, Purpose

ROOT = Path(__file__).resolve().parent.parent
ROME = ZoneInfo("Europe/Rome")
POOL = 5000  # distinct records, cycled: a pool of 1 million would only measure memory


def records(policy: PolicySettings, count: int) -> list[bytes]:
    rng = random.Random(17)
    out: list[bytes] = []
    head = GENESIS
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    operator = Operator("op-1", "active", date(2024, 1, 1), date(2030, 1, 1), ("+390844000001",))
    mandate = Mandate("acme", "op-1", date(2024, 1, 1), date(2030, 1, 1))
    for n in range(count):
        # a batch of about 200 intents shares one decision time
        now = start + timedelta(seconds=(n // 200) * 37, milliseconds=(n // 200) % 1000)
        today = now.astimezone(ROME).date()
        callee = f"+39347{rng.randrange(10**7):07d}"
        intent = Intent(f"bench-{n}", callee, "op-1", "acme", Purpose.MARKETING, "+39 0844 000001", "camp-1")
        register = (RegisterResult(rng.random() < 0.2, today - timedelta(days=rng.randrange(10)), None, "acme"),)
        consents = (Consent("acme", "consent", date(2025, 1, 1)),) if rng.random() < 0.1 else ()
        optouts = (OptOut("*", date(2025, 5, 5)),) if rng.random() < 0.02 else ()
        calls = tuple(
            PastCall(now - timedelta(hours=rng.randrange(1, 600)), f"{k:010x}")
            for k in range(rng.choice([0, 0, 0, 1, 2]))
        )
        facts = Facts(
            operator,
            register,
            consents,
            optouts,
            {"operators": "ops-1", "mandates": "m-1"},
            tuple(sorted(calls, key=lambda c: c.at)),
            None,
            listed=rng.random() < 0.9,
            directory_as_of=today - timedelta(days=2),
            campaign_outcomes={"answered": 400, "silent": 3},
            mandates=(mandate,),
        )
        caller = normalise_caller_id(intent.caller_id, "IT")
        record = decide(intent, callee, facts, now, policy, caller).to_audit(
            intent, {"topic": "callguard.intents", "partition": n % 12, "offset": n}
        )
        value, head = link(record, head)
        out.append(value)
    return out


def run(policy: PolicySettings, pool: list[bytes], count: int) -> tuple[float, Replay]:
    replay = Replay(policy)
    add = replay.add_bytes
    started = time.process_time()
    for n in range(count):
        add(pool[n % len(pool)])
    return time.process_time() - started, replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    own = load_policy(ROOT / "tests" / "policies" / "open-hours.toml")
    stricter = replace(
        own,
        version="bench-stricter",
        frequency_limits=(CapLimit(timedelta(hours=24), 1), CapLimit(timedelta(days=30), 10)),
    )
    pool = records(own, POOL)
    size = sum(map(len, pool)) / len(pool)
    print(
        f"replay: {args.records:,} records per run ({POOL:,} distinct, {size:,.0f} bytes each), one process, CPU time"
    )
    for name, policy in (("same policy", own), ("stricter policy", stricter)):
        rates = []
        last = None
        for _ in range(args.runs):
            seconds, last = run(policy, pool, args.records)
            rates.append(args.records / seconds)
        assert last is not None
        median = statistics.median(rates)
        print(
            f"  {name:<16} {median:>9,.0f} records/s ({1e6 / median:.1f} us each; runs {min(rates):,.0f}-{max(rates):,.0f}); "
            f"{last.changed:,} changed, {last.not_replayable_count:,} not replayable"
        )
        if name == "same policy" and (last.changed or last.not_replayable_count):
            print("replay: the records' own policy changed decisions: not deterministic", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
