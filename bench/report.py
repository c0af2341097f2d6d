"""What ``callguard audit report`` costs in one process, without its I/O.

Two figures, medians of ``--runs``:

- the chain check: :class:`callguard.core.audit.ChainCheck` over audit records of
  the worker's size (the pool of ``bench/replay.py``: every rule on, about
  2.9 KB each), records/s. A report reads each partition holding a record
  shown from that record to the newest one, so this rate says how long a
  report on a number called long ago takes: the records written since, in
  its partitions, divided by it. Beside it, :func:`callguard.core.audit.verify`
  over the same records in the same run (the baseline: the same check with
  the records in a list).
- rendering: :func:`callguard.core.report.render` of 10, 100 and 1 000 decisions
  about one number, milliseconds and the file's size.

    ./dev bench report [--records 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay import POOL, ROOT, records

from callguard.core.audit import ChainCheck, Stored, verify
from callguard.core.policyfile import load_policy
from callguard.core.report import Chain, Entry, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    policy = load_policy(ROOT / "tests" / "policies" / "open-hours.toml")
    pool = records(policy, POOL)  # one chain: the pool's records link to each other in order
    size = sum(map(len, pool)) / len(pool)
    stored = [Stored(0, n, pool[n % len(pool)]) for n in range(args.records)]
    watch = {(0, n) for n in range(0, args.records, max(args.records // 12, 1))}  # a dozen records shown
    print(f"report: chain check over {args.records:,} records of {size:,.0f} bytes (one process, CPU time)")
    streamed, listed = [], []
    for _ in range(args.runs):
        started = time.process_time()
        check = ChainCheck(watch=watch)
        for record in stored:
            check.add(record)
        report = check.finish()
        streamed.append(args.records / (time.process_time() - started))
        started = time.process_time()
        verify(stored)
        listed.append(args.records / (time.process_time() - started))
    problems = len(report.problems)  # the pool repeats after POOL records: one break per repeat
    med, base = statistics.median(streamed), statistics.median(listed)
    print(
        f"  ChainCheck (streamed, {len(watch)} watched) {med:>9,.0f} records/s ({1e6 / med:.1f} us each); "
        f"verify (a list) {base:,.0f} records/s; ratio {med / base:.2f}; {problems} break(s) where the pool repeats"
    )
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    for count in (10, 100, 1000):
        entries = [Entry(orjson.loads(pool[n]), 0, n) for n in range(count)]
        chain = ChainCheck(watch={(0, n) for n in range(count)})
        for n in range(count + 1):
            chain.add(Stored(0, n, pool[n]))
        verdict = Chain(chain.finish())
        times = []
        page = ""
        for _ in range(args.runs):
            started = time.perf_counter()
            page = render(entries[0].record["callee"] or "+39", entries, verdict, now)
            times.append(time.perf_counter() - started)
        print(
            f"  render {count:>5,} decisions: {statistics.median(times) * 1000:8.1f} ms, "
            f"{len(page.encode()) / 1024:,.0f} KiB of HTML"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
