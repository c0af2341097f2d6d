"""The durable audit store: ``callguard.audit`` copied into PostgreSQL, searchable by callee.

A Garante complaint names a phone number and asks what was decided about it,
why, and on which data. The audit topic has the answer but is kept only for
its retention and cannot be queried by number; the store keeps every record
for as long as the law asks (years) and answers by number in milliseconds.

The topic stays the evidence: the store keeps each record's exact bytes and
its partition and offset, so the hash chain can be re-verified from the store
(:func:`stored_records` feeds :func:`callguard.core.audit.verify`).

Driver: **asyncpg**. The sink is asyncio already (aiokafka); asyncpg speaks
PostgreSQL's binary protocol natively, sends a whole batch as one
``executemany`` pipeline, and ships manylinux wheels with no libpq to install.

Delivery: the sink writes each batch in one transaction, idempotent on
``intent_id`` (``ON CONFLICT DO NOTHING``), and commits the Kafka offsets only
after the transaction committed: a crash at any point redelivers records that
are then ignored, never lost and never stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from callguard.config import Settings, broker_hosts, kafka_security
from callguard.core.audit import Stored
from callguard.core.schema import AUDIT_TOPIC
from callguard.kafka.access import refuse_hidden_topic
from callguard.retry import Backoff, retry

log = logging.getLogger("callguard.auditstore")
#: ``--since`` days are Italian days, like the policy's
ROME = ZoneInfo("Europe/Rome")

#: The sink's own consumer group: its committed offsets say how far the store is.
SINK_GROUP = "callguard-audit-sink"

#: Idempotent migration, run by the sink at start (and harmless to run again).
SCHEMA = """
CREATE TABLE IF NOT EXISTS callguard_audit (
    intent_id       text PRIMARY KEY,
    decided_at      timestamptz NOT NULL,
    decision        text NOT NULL,
    reasons         text[] NOT NULL,
    callee          text,
    client_id       text,
    operator_id     text,
    campaign_id     text,
    purpose         text,
    audit_partition integer NOT NULL,
    audit_offset    bigint NOT NULL,
    record          jsonb NOT NULL,
    raw             bytea NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS callguard_audit_callee ON callguard_audit (callee, decided_at DESC);
CREATE INDEX IF NOT EXISTS callguard_audit_position ON callguard_audit (audit_partition, audit_offset);
-- every other record of the topic: a repeated decision for an intent already
-- stored (at-least-once), or a record that is not a readable decision. With
-- callguard_audit this is the whole topic, so each partition's chain can be
-- re-verified from the store.
CREATE TABLE IF NOT EXISTS callguard_audit_other (
    audit_partition integer NOT NULL,
    audit_offset    bigint NOT NULL,
    intent_id       text,
    kind            text NOT NULL,
    raw             bytea NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audit_partition, audit_offset)
);
"""

_INSERT = """
INSERT INTO callguard_audit (intent_id, decided_at, decision, reasons, callee, client_id, operator_id,
    campaign_id, purpose, audit_partition, audit_offset, record, raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
ON CONFLICT (intent_id) DO NOTHING
"""

_INSERT_OTHER = """
INSERT INTO callguard_audit_other (audit_partition, audit_offset, intent_id, kind, raw)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (audit_partition, audit_offset) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One audit record as a row of ``callguard_audit``; ``None`` fields are unknown."""

    intent_id: str
    decided_at: datetime
    decision: str
    reasons: list[str]
    callee: str | None
    client_id: str | None
    operator_id: str | None
    campaign_id: str | None
    purpose: str | None
    partition: int
    offset: int
    record: str
    raw: bytes

    def params(self) -> tuple[Any, ...]:
        return (
            self.intent_id, self.decided_at, self.decision, self.reasons, self.callee, self.client_id,
            self.operator_id, self.campaign_id, self.purpose, self.partition, self.offset, self.record, self.raw,
        )  # fmt: skip


def to_row(stored: Stored) -> Row | None:
    """The row for an audit record, or None when it is not a readable decision
    (or holds a NUL character, which PostgreSQL text and jsonb cannot store)."""
    if b"\\u0000" in stored.value:
        return None
    try:
        record = orjson.loads(stored.value)
        intent = record.get("intent") or {}
        decided_at = datetime.fromisoformat(record["decided_at"])
        intent_id = record["intent_id"]
        if not isinstance(intent_id, str) or record["decision"] not in ("allow", "deny"):
            return None
        return Row(
            intent_id=intent_id,
            decided_at=decided_at,
            decision=record["decision"],
            reasons=[str(r) for r in record.get("reasons") or ()],
            callee=record.get("callee"),
            client_id=intent.get("client_id"),
            operator_id=intent.get("operator_id"),
            campaign_id=intent.get("campaign_id"),
            purpose=intent.get("purpose"),
            partition=stored.partition,
            offset=stored.offset,
            record=stored.value.decode(),
            raw=stored.value,
        )
    except (orjson.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


async def migrate(conn: asyncpg.Connection) -> None:
    await conn.execute(SCHEMA)


async def write_batch(conn: asyncpg.Connection, records: Sequence[Stored]) -> int:
    """Store ``records`` in one transaction; returns how many new decisions were stored.

    The first record of an intent becomes its row; any later one (a repeated
    decision) and any unreadable record go to ``callguard_audit_other``, so
    the store holds every record of the topic exactly once per position.
    """
    rows = [(stored, to_row(stored)) for stored in records]
    decisions = [row for _, row in rows if row is not None]
    async with conn.transaction():
        before = await conn.fetchval("SELECT count(*) FROM callguard_audit WHERE intent_id = ANY($1::text[])",
                                     [r.intent_id for r in decisions])  # fmt: skip
        if decisions:
            await conn.executemany(_INSERT, [row.params() for row in decisions])
        owners = {
            (rec["audit_partition"], rec["audit_offset"])
            for rec in await conn.fetch(
                "SELECT audit_partition, audit_offset FROM callguard_audit WHERE intent_id = ANY($1::text[])",
                [r.intent_id for r in decisions],
            )
        }
        other = [
            (s.partition, s.offset, None if row is None else row.intent_id, "unreadable" if row is None else "repeat",
             s.value)
            for s, row in rows
            if row is None or (s.partition, s.offset) not in owners
        ]  # fmt: skip
        if other:
            await conn.executemany(_INSERT_OTHER, other)
        after = await conn.fetchval("SELECT count(*) FROM callguard_audit WHERE intent_id = ANY($1::text[])",
                                    [r.intent_id for r in decisions])  # fmt: skip
    return int(after) - int(before)


# --- the sink ------------------------------------------------------------------


@dataclass
class SinkStats:
    records: int = 0
    stored: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


def sink_consumer(settings: Settings, topics: Iterable[str] = (AUDIT_TOPIC,)) -> AIOKafkaConsumer:
    """The sink group's consumer: manual commits, from the beginning of the topic."""
    session_ms = int(settings.session_timeout * 1000)
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=broker_hosts(settings.broker),
        group_id=SINK_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(session_ms // 3, 100),
        max_poll_records=settings.batch_size,
        fetch_max_wait_ms=200,
        isolation_level="read_committed",  # never store a record of an aborted transaction
        **kafka_security(settings),
    )


async def run_sink(settings: Settings, stop: asyncio.Event | None = None) -> SinkStats:
    """Copy ``callguard.audit`` into PostgreSQL until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    stats = SinkStats()
    from callguard.kafka.topics import ensure_topics  # topics with the configured partitions

    # before subscribing: a subscription could make the broker create the audit
    # topic with its own partition count, and the chains need the worker's
    await ensure_topics(settings, topics=(AUDIT_TOPIC,))
    conn: asyncpg.Connection = await asyncpg.connect(settings.audit_dsn, timeout=10)
    consumer = sink_consumer(settings)
    try:
        await migrate(conn)
        await consumer.start()
        log.info("audit sink started: %s -> PostgreSQL, group %s", AUDIT_TOPIC, SINK_GROUP)
        last_report = time.monotonic()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=settings.batch_size)
            records = [Stored(tp.partition, r.offset, r.value or b"") for tp, rs in batches.items() for r in rs]
            if not records:
                continue
            conn, stored = await _store(conn, settings.audit_dsn, records, stop)
            if stored is None:
                break
            stats.stored += stored
            # only now, with the transaction committed, may the offsets move on
            try:
                await consumer.commit(
                    {tp: OffsetAndMetadata(rs[-1].offset + 1, "") for tp, rs in batches.items() if rs}
                )
            except CommitFailedError as exc:  # rebalanced meanwhile: the records come again, and are ignored
                log.warning("audit sink: offsets not committed (%s); records will be re-read", exc)
            stats.records += len(records)
            stats.batches += 1
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                log.info("audit sink: %d records read, %d decisions stored", stats.records, stats.stored)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await conn.close()
    log.info("audit sink stopped: %d records read, %d decisions stored", stats.records, stats.stored)
    return stats


#: PostgreSQL unreachable: try again after 1 s, doubling up to every 30 s.
POSTGRES_OUTAGE = Backoff(1.0, 30.0)
_UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


class _Stopped(Exception):
    """The sink was told to stop while PostgreSQL was unreachable."""


async def _store(
    conn: asyncpg.Connection, dsn: str, records: Sequence[Stored], stop: asyncio.Event
) -> tuple[asyncpg.Connection, int | None]:
    """Write a batch, waiting out an unreachable PostgreSQL (reconnecting with
    backoff) rather than skipping it: the offsets must not move past it.
    Returns the connection and how many decisions were stored, or ``None`` if
    ``stop`` was set first (the batch is not stored, its offsets not committed:
    the next start reads it again)."""
    live = conn

    async def attempt() -> tuple[asyncpg.Connection, int | None]:
        nonlocal live
        if live.is_closed():
            live = await asyncpg.connect(dsn, timeout=10)
        return live, await write_batch(live, records)

    def failed(exc: Exception, delay: float) -> None:
        log.warning("audit store unavailable (%s); retrying in %.0f s", type(exc).__name__, delay)

    async def pause(delay: float) -> None:
        with contextlib.suppress(Exception):
            await live.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            raise _Stopped

    try:
        return await retry(attempt, failed, POSTGRES_OUTAGE, retry_on=_UNREACHABLE, sleep=pause)
    except _Stopped:
        log.warning("audit sink stopped with PostgreSQL unreachable: %d records not stored, read again at the next start",
                    len(records))  # fmt: skip
        return live, None


# --- search ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SinkLag:
    """How far the audit store is behind ``callguard.audit`` on one partition."""

    partition: int
    end: int  # the topic's high watermark when searched
    committed: int | None  # the sink group's next offset, None when it never committed

    @property
    def behind(self) -> int:
        return max(self.end - (self.committed or 0), 0)


@dataclass
class SearchResult:
    number: str
    callee: str | None  # the E.164 form searched, None when NUMBER is not a valid number
    decisions: list[dict[str, Any]]  # newest first; "pending": True for records not yet in the store
    lag: list[SinkLag] | None  # None when the topic could not be read
    lag_error: str | None = None
    #: False when the records past the store were too many to read them all
    #: (``max_scan``): decisions not stored yet may then be missing
    scan_complete: bool = True


def _row_json(row: asyncpg.Record, pending: bool = False) -> dict[str, Any]:
    record = orjson.loads(row["record"]) if isinstance(row["record"], str | bytes) else dict(row["record"])
    return {"record": record, "partition": row["audit_partition"], "offset": row["audit_offset"], "pending": pending}


async def search_store(
    dsn: str, callee: str | None, raw: str, since: date | None, client: str | None
) -> list[dict[str, Any]]:
    """Every stored decision about ``callee`` (or, for a number that does not
    normalise, about that raw input), newest first."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    try:
        where = ["callee = $1"] if callee is not None else ["callee IS NULL AND record->'intent'->>'callee_input' = $1"]
        params: list[Any] = [callee if callee is not None else raw]
        if since is not None:
            params.append(since)
            where.append(f"decided_at >= (${len(params)}::date)::timestamp AT TIME ZONE 'Europe/Rome'")
        if client is not None:
            params.append(client)
            where.append(f"client_id = ${len(params)}")
        rows = await conn.fetch(
            "SELECT record::text AS record, audit_partition, audit_offset FROM callguard_audit "
            f"WHERE {' AND '.join(where)} ORDER BY decided_at DESC, intent_id DESC",
            *params,
        )
    except asyncpg.UndefinedTableError:
        return []  # the sink never ran: nothing stored yet (the lag says how much is missing)
    finally:
        await conn.close()
    return [_row_json(row) for row in rows]


async def scan_unsynced(
    settings: Settings, match: Any, max_records: int = 1_000_000, max_seconds: float = 60.0
) -> tuple[list[SinkLag], list[Stored], bool]:
    """The sink's lag per partition, and the records past its committed
    offsets that ``match`` accepts: the part of the answer not stored yet.

    End offsets come from fetch responses' high watermarks (``end_offsets``
    under-reports on some brokers); committed offsets from the sink group.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_hosts(settings.broker),
        group_id=SINK_GROUP,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        isolation_level="read_committed",
        **kafka_security(settings),
    )
    try:
        await consumer.start()
        partitions = sorted(consumer.partitions_for_topic(AUDIT_TOPIC) or ())
        if not partitions:
            await consumer._client.force_metadata_update()  # a fresh client may not know the topic yet
            partitions = sorted(consumer.partitions_for_topic(AUDIT_TOPIC) or ())
        if not partitions:  # no such topic, or one the broker's ACLs hide from this user: say which
            await refuse_hidden_topic(consumer._client, AUDIT_TOPIC, kafka_security(settings))
        tps = [TopicPartition(AUDIT_TOPIC, p) for p in partitions]
        if not tps:
            return [], [], True
        committed = {tp: await consumer.committed(tp) for tp in tps}
        consumer.assign(tps)
        for tp in tps:
            if committed[tp] is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed[tp])
        ends: dict[TopicPartition, int] = {}
        found: list[Stored] = []
        scanned = 0
        deadline = time.monotonic() + max_seconds
        pending = set(tps)
        while pending and time.monotonic() < deadline and scanned < max_records:
            batches = await consumer.getmany(*pending, timeout_ms=300, max_records=5000)
            for tp in list(pending):
                if tp not in ends and consumer.highwater(tp) is not None:
                    ends[tp] = consumer.highwater(tp)
                for record in batches.get(tp, []):
                    if record.offset >= ends.get(tp, record.offset + 1):
                        continue
                    scanned += 1
                    if match(record.value or b""):
                        found.append(Stored(tp.partition, record.offset, record.value or b""))
                if tp in ends and await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if set(tps) - set(ends):
            raise TimeoutError(f"no answer from {AUDIT_TOPIC} within {max_seconds:.0f} s")
        lag = [SinkLag(tp.partition, ends[tp], committed[tp]) for tp in tps]
        return lag, found, not pending
    finally:
        await consumer.stop()


async def search(
    settings: Settings, number: str, callee: str | None, since: date | None, client: str | None
) -> SearchResult:
    """Stored decisions plus those the sink has not stored yet, newest first."""
    decisions = await search_store(settings.audit_dsn, callee, number, since, client)
    result = SearchResult(number, callee, decisions, None)
    needle = (callee if callee is not None else number).encode()

    def match(value: bytes) -> bool:
        return needle in value  # cheap pre-filter; each hit is parsed and checked below

    try:
        result.lag, unsynced, result.scan_complete = await scan_unsynced(settings, match)
    except Exception as exc:  # the store still answers; say why the lag is unknown
        result.lag_error = str(exc) or type(exc).__name__
        return result
    stored_ids = {d["record"].get("intent_id") for d in decisions}
    for stored in unsynced:
        row = to_row(stored)
        if row is None or row.intent_id in stored_ids:
            continue
        record = orjson.loads(stored.value)
        if callee is not None and row.callee != callee:
            continue
        if callee is None and (row.callee is not None or (record.get("intent") or {}).get("callee_input") != number):
            continue
        if since is not None and row.decided_at.astimezone(ROME).date() < since:
            continue
        if client is not None and row.client_id != client:
            continue
        stored_ids.add(row.intent_id)
        decisions.append({"record": record, "partition": stored.partition, "offset": stored.offset, "pending": True})
    # an edited jsonb column may lack a field: sort what is there (the exact bytes are the evidence)
    decisions.sort(key=lambda d: (str(d["record"].get("decided_at")), str(d["record"].get("intent_id"))), reverse=True)
    return result


async def stored_records(dsn: str) -> list[Stored]:
    """Every record the store holds, in (partition, offset) order, for
    :func:`callguard.core.audit.verify`: the chain re-verified from the store."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT audit_partition, audit_offset, raw FROM callguard_audit UNION ALL "
            "SELECT audit_partition, audit_offset, raw FROM callguard_audit_other ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    return [Stored(r["audit_partition"], r["audit_offset"], bytes(r["raw"])) for r in rows]


async def stored_segment(dsn: str, partition: int, first: int) -> AsyncIterator[Stored]:
    """The records the store holds of one partition, exact bytes in offset
    order, from the last one before offset ``first`` (the record ``first``
    links to) on: the part of a chain :class:`callguard.core.audit.ChainCheck`
    needs to judge the records from ``first`` on. Streamed by a cursor."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
    try:
        try:
            start = await conn.fetchval(
                "SELECT GREATEST("
                "(SELECT max(audit_offset) FROM callguard_audit WHERE audit_partition = $1 AND audit_offset < $2), "
                "(SELECT max(audit_offset) FROM callguard_audit_other WHERE audit_partition = $1 AND audit_offset < $2))",
                partition,
                first,
            )
        except asyncpg.UndefinedTableError:
            return  # the sink never ran: nothing stored
        query = (
            "SELECT audit_offset, raw FROM callguard_audit WHERE audit_partition = $1 AND audit_offset >= $2 "
            "UNION ALL SELECT audit_offset, raw FROM callguard_audit_other WHERE audit_partition = $1 "
            "AND audit_offset >= $2 ORDER BY 1"
        )
        async with conn.transaction(readonly=True):
            async for row in conn.cursor(query, partition, first if start is None else start, prefetch=1000):
                yield Stored(partition, row["audit_offset"], bytes(row["raw"]))
    finally:
        await conn.close()
