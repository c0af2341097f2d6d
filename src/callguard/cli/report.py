"""``callguard audit report``: the regulator's report on one number, as one HTML file.

The shell around :mod:`callguard.core.report`: it finds the decisions about the
number with the same lookup as ``callguard audit search`` (the audit store,
and ``callguard.audit`` past it), reads back each partition that holds one of
them from the record before the first one shown to the newest one (the store,
then the topic past it) through :class:`callguard.core.audit.ChainCheck`, renders
the records from those verified bytes, and writes the file (mode 0600: it
holds personal data). It prints one line with the number masked; logs never
name it.

Exit codes: 0 written; 1 written, but the hash chain does not hold for a
record shown; 2 bad input (a number that does not normalise, a bad day, an
unwritable file) or an unreachable audit store, in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from callguard import __version__
from callguard.config import ENV_VARS, ConfigError, Settings, safe_url
from callguard.core.audit import ChainCheck, Stored
from callguard.core.numbers import mask, normalise
from callguard.core.report import Chain, Entry, Sources, render, totals
from callguard.core.schema import AUDIT_TOPIC

HELP = (
    "write one self-contained HTML file with every decision about a number, the data each relied on, "
    "a timeline and the hash chain's verdict (for a complaint to the Garante)"
)


class Unreachable(Exception):
    """The audit store could not be read."""


def add_parser(actions: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    report = actions.add_parser("report", help=HELP, description=HELP)
    report.add_argument("--callee", required=True, help="the number, in any form the dialers write it")
    report.add_argument("--since", help="only decisions from this day on (YYYY-MM-DD, Italian days)")
    report.add_argument("--out", required=True, type=Path, help="the HTML file to write (replaced if it exists)")
    report.add_argument("--audit-dsn", help=f"PostgreSQL DSN of the audit store [{ENV_VARS['audit_dsn']}]")
    config_flags(report)


def main_report(args: argparse.Namespace, settings: Settings) -> int:
    callee = normalise(args.callee, settings.default_region)
    if callee is None:
        raise ConfigError(
            f"--callee {args.callee!r} is not a valid phone number (numbers without a country code are read "
            f"as {settings.default_region}, {ENV_VARS['default_region']})"
        )
    since = None
    if args.since:
        try:
            since = date.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(f"--since: expected YYYY-MM-DD, got {args.since!r}") from None
    out: Path = args.out
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no directory {out.parent}")
    if not os.access(out.parent, os.W_OK):
        raise ConfigError(f"--out {out}: cannot write in {out.parent}")
    if not settings.audit_dsn:
        raise ConfigError(f"{ENV_VARS['audit_dsn']} (or --audit-dsn) is required: the PostgreSQL of the audit store")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker problem is said in the report
    try:
        entries, chain, sources = asyncio.run(gather(settings, args.callee, callee, since))
    except Unreachable as exc:
        print(f"callguard: {exc}", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    page = render(callee, entries, chain, now, written=args.callee, since=since, sources=sources, version=__version__)
    try:
        _write(out, page)
    except OSError as exc:
        raise ConfigError(f"--out {out}: {exc.strerror or exc}") from None
    counts = totals(entries, chain, since)
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.chain.items())) or "nothing to check"
    scope = f" since {since}" if since else ""
    print(
        f"report: {counts.decisions} decision(s) about {mask(callee)}{scope} ({counts.allowed} allowed, "
        f"{counts.decisions - counts.allowed} denied); hash chain: {states} -> {out}"
    )
    return 1 if counts.chain.get("broken") else 0


def _write(out: Path, page: str) -> None:
    """Write the file whole or not at all, readable by its owner only."""
    handle, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def gather(
    settings: Settings, number: str, callee: str, since: date | None
) -> tuple[list[Entry], Chain, Sources]:
    """The decisions about ``callee`` (``callguard audit search``'s lookup),
    their partitions read back through the chain check, and where it all came from."""
    import asyncpg

    from callguard.auditstore.store import search

    where = f"audit store at {safe_url(settings.audit_dsn)}"
    try:
        found = await search(settings, number, callee, since, None)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unreachable(f"cannot read the {where}: {exc or type(exc).__name__}") from None
    behind = None if found.lag is None else sum(p.behind for p in found.lag)
    sources = Sources(
        f"the audit store (PostgreSQL) and {AUDIT_TOPIC} past it"
        if found.lag is not None
        else "the audit store (PostgreSQL) only",
        store_behind=behind,
        topic_error=found.lag_error,
        scan_complete=found.scan_complete,
    )
    positions = {(d["partition"], d["offset"]): d for d in found.decisions}
    if not positions:
        return [], Chain(None, None), sources
    lags = {p.partition: p for p in found.lag or ()}
    check = ChainCheck(watch=positions)
    exact: dict[tuple[int, int], bytes] = {}
    unread: list[int] = []
    notes: list[str] = []
    for partition in sorted({p for p, _ in positions}):
        first = min(o for p, o in positions if p == partition)
        last_stored = -1
        try:
            async for stored in _stored_segment(settings, partition, first):
                last_stored = stored.offset
                _add(check, stored, positions, exact)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Unreachable(f"reading the {where}: {exc or type(exc).__name__}") from None
        lag = lags.get(partition)
        if lag is None or not lag.behind:
            continue
        if not found.scan_complete:
            unread.append(partition)
            continue
        try:
            async for stored in _topic_tail(settings, partition, max(lag.committed or 0, last_stored + 1)):
                _add(check, stored, positions, exact)
        except Exception as exc:  # the store's part stands; the report says what is missing
            unread.append(partition)
            notes.append(f"partition {partition} past the audit store could not be read ({exc or type(exc).__name__})")
    entries = []
    for key, decision in positions.items():
        record = decision["record"]
        value = exact.get(key)
        if value is not None:  # shown as the chain holds it, not as the store's jsonb column
            record = _readable(value) or record
        entries.append(Entry(record, key[0], key[1], bool(decision["pending"])))
    return entries, Chain(check.finish(), "; ".join(notes) or None, tuple(unread)), sources


def _readable(value: bytes) -> dict[str, Any] | None:
    """A record's exact bytes as a record, or None when they are not one (the chain check says why)."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("decided_at"), str):
        return None
    return record


def _add(check: ChainCheck, stored: Stored, positions: Any, exact: dict[tuple[int, int], bytes]) -> None:
    check.add(stored)
    key = (stored.partition, stored.offset)
    if key in positions:
        exact[key] = stored.value


async def _stored_segment(settings: Settings, partition: int, first: int) -> AsyncIterator[Stored]:
    from callguard.auditstore.store import stored_segment

    async for stored in stored_segment(settings.audit_dsn, partition, first):
        yield stored


async def _topic_tail(settings: Settings, partition: int, start: int) -> AsyncIterator[Stored]:
    """The records of one audit partition from ``start`` to its end (read_committed, like every audit reader)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from callguard.config import broker_hosts, kafka_security
    from callguard.kafka.auditlog import read_partition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_hosts(settings.broker),
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **kafka_security(settings),
    )
    await consumer.start()
    try:
        async for stored in read_partition(consumer, TopicPartition(AUDIT_TOPIC, partition), start=start):
            yield stored
    finally:
        await consumer.stop()
