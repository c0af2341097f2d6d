"""Rows per second of ``callguard audit sink`` (Kafka -> PostgreSQL), and of ``audit search`` and ``audit report``.

Starts an embedded broker and PostgreSQL, publishes ``--records`` hash-chained
audit records shaped like the worker's (about 1.3 KB each, 6 partitions) to
``callguard.audit``, then times the sink (in-process, the same ``run_sink``
the command runs) from start until every record is stored and its offsets
committed, then times one search by number on the full table and one `audit report`
(the search, the chain check reading its partition back from the store, the HTML).

    ./dev bench audit_sink [--records 50000] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from callguard.auditstore.store import run_sink, search
from callguard.cli.report import gather
from callguard.config import Settings
from callguard.core.audit import GENESIS, link
from callguard.core.report import render
from callguard.core.schema import AUDIT_TOPIC
from callguard.dev.embedded import Embedded, start_postgres
from callguard.kafka.topics import ensure_topics

PARTITIONS = 6


def record(n: int, at: datetime) -> dict[str, object]:
    callee = f"+39347{n % 100_000:07d}"
    return {
        "intent_id": f"bench-{n:08d}",
        "decision": "deny" if n % 5 == 0 else "allow",
        "reasons": ["opposition_register"] if n % 5 == 0 else [],
        "callee": callee,
        "decided_at": (at + timedelta(milliseconds=n)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "retryable": False,
        "versions": {"policy": "it-core/1", "operators": "v1", "register": "2026-11-27"},
        "intent": {"callee": callee, "callee_input": None, "operator_id": "op-1", "client_id": "acme",
                   "purpose": "marketing", "caller_id": None, "campaign_id": "winter", "requested_at": None},
        "rules": [
            {"rule": "callee_number", "outcome": "pass", "reasons": [], "detail": {"callee": callee}},
            {"rule": "operator_certified", "outcome": "pass", "reasons": [], "detail": {"operator_id": "op-1"}},
            {"rule": "opposition_register", "outcome": "deny" if n % 5 == 0 else "pass", "reasons": [],
             "detail": {"result": {"status": "opposed" if n % 5 == 0 else "clear", "as_of": "2026-11-27",
                                   "registered_at": None, "client_id": "*"}, "age_days": 1, "max_age_days": 15}},
            {"rule": "internal_dnc", "outcome": "pass", "reasons": [], "detail": {}},
        ],
        "facts": {"operator": {"operator_id": "op-1", "status": "active", "valid_from": "2024-01-01",
                               "valid_until": "2030-12-31"}, "register": [], "consents": [], "optouts": []},
        "source": {"topic": "callguard.intents", "partition": n % PARTITIONS, "offset": n // PARTITIONS},
    }  # fmt: skip


async def main(records: int, batch_size: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="callguard-bench-"))
    with Embedded(workdir=work) as servers:
        pg = start_postgres(work)
        try:
            settings = replace(
                Settings(), broker=servers.broker_url, audit_dsn=pg.url, batch_size=batch_size, session_timeout=3
            )
            await ensure_topics(settings)
            producer = AIOKafkaProducer(bootstrap_servers=servers.broker_url.split("://")[1], linger_ms=5)
            await producer.start()
            heads = [GENESIS] * PARTITIONS
            at = datetime.now(UTC)
            size = 0
            for n in range(records):
                p = n % PARTITIONS
                value, heads[p] = link(record(n, at), heads[p])
                size += len(value)
                await producer.send(AUDIT_TOPIC, value, partition=p)
            await producer.stop()
            print(f"published {records:,} audit records, {size / records:.0f} bytes each on average")

            stop = asyncio.Event()
            started = time.monotonic()
            sink = asyncio.create_task(run_sink(settings, stop))
            conn = await asyncpg.connect(pg.url)
            stored = 0
            while stored < records:
                await asyncio.sleep(0.1)
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    stored = await conn.fetchval("SELECT count(*) FROM callguard_audit")
                if sink.done():
                    sink.result()
            elapsed = time.monotonic() - started
            stop.set()
            await sink
            print(f"sink: {records:,} rows in {elapsed:.1f} s = {records / elapsed:,.0f} rows/s "
                  f"(batch {batch_size}, including consumer group join)")  # fmt: skip
            started = time.monotonic()
            result = await search(settings, "+393470000005", "+393470000005", None, None)
            print(f"search: {len(result.decisions)} decision(s) in {time.monotonic() - started:.2f} s "
                  f"(store {await conn.fetchval('SELECT count(*) FROM callguard_audit'):,} rows, lag read from the topic)")  # fmt: skip
            # the regulator's report on the same number: its one decision is near the start of its
            # partition, so the chain check reads the whole partition back from the store
            started = time.monotonic()
            entries, chain, _ = await gather(settings, "+393470000005", "+393470000005", None)
            read_back = 0 if chain.report is None else sum(chain.report.records.values())
            page = render("+393470000005", entries, chain, datetime.now(UTC))
            print(f"report: {len(entries)} decision(s), {read_back:,} records read back through the chain check, "
                  f"{len(page) / 1024:,.0f} KiB of HTML in {time.monotonic() - started:.2f} s")  # fmt: skip
            await conn.close()
        finally:
            pg.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.batch_size))
