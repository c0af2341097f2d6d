"""``callguard replay``: decide the recorded past again under any policy, and say what would change.

Reads audit records from the PostgreSQL audit store (default) or straight from
``callguard.audit``, one at a time (a replay of millions of records holds
only counts and a few examples), and decides each one again with the facts it
recorded at its recorded ``decided_at`` (:mod:`callguard.core.replay`). It needs no
Redis and changes nothing. Numbers in the examples are masked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from callguard.config import ENV_VARS, ConfigError, Settings, safe_url
from callguard.core.policyfile import PolicyError, load_policy
from callguard.core.replay import Replay
from callguard.core.schema import AUDIT_TOPIC, rfc3339

ROME = ZoneInfo("Europe/Rome")
HELP = (
    "decide the recorded decisions again under a policy file, with the facts each audit record holds, "
    "and show what would change (no Redis; nothing is changed)"
)


class Unreachable(Exception):
    """The audit store or the broker could not be read."""


def add_parsers(commands: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    replay = commands.add_parser("replay", help=HELP, description=HELP)
    replay.add_argument("--policy", required=True, type=Path, help="the policy file to decide by (TOML)")
    replay.add_argument("--since", help="only decisions from this day on (YYYY-MM-DD, Italian days)")
    replay.add_argument("--until", help="only decisions up to this day, included (YYYY-MM-DD, Italian days)")
    replay.add_argument("--client", help="only decisions for calls on behalf of this client")
    replay.add_argument("--campaign", help="only decisions for this campaign")
    replay.add_argument(
        "--from",
        dest="source",
        choices=("store", "topic"),
        default="store",
        help=f"read the PostgreSQL audit store (default) or {AUDIT_TOPIC} itself",
    )
    replay.add_argument("--examples", type=int, default=3, help="examples shown per kind of change (default 3)")
    replay.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    replay.add_argument("--audit-dsn", help=f"PostgreSQL DSN of the audit store [{ENV_VARS['audit_dsn']}]")
    config_flags(replay)


def _day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected YYYY-MM-DD, got {value!r}") from None


def _start_of(day: date) -> datetime:
    return datetime.combine(day, clock(), ROME)


def main_replay(args: argparse.Namespace, settings: Settings) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(f"callguard: invalid policy file {exc}", file=sys.stderr)
        return 2
    since, until = _day(args.since, "--since"), _day(args.until, "--until")
    if since is not None and until is not None and until < since:
        raise ConfigError(f"--until {until} is before --since {since}")
    if args.examples < 0:
        raise ConfigError("--examples: expected 0 or more")
    if args.source == "store" and not settings.audit_dsn:
        raise ConfigError(
            f"{ENV_VARS['audit_dsn']} (or --audit-dsn) is required to replay from the audit store (or --from topic)"
        )
    replay = Replay(policy, examples_per_kind=args.examples)
    filters = Filters(since, until, args.client, args.campaign)
    try:
        asyncio.run(_replay(settings, args.source, filters, replay))
    except Unreachable as exc:
        print(f"callguard: {exc}", file=sys.stderr)
        return 2
    if args.json:
        result = {
            "source": "audit store" if args.source == "store" else AUDIT_TOPIC,
            "filters": filters.to_json(),
            **replay.to_json(),
            "summary": replay.summary(),
        }
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print("\n".join(replay.lines()))
    return 0


class Filters:
    """``--since``/``--until`` (Italian days), ``--client``, ``--campaign``."""

    def __init__(self, since: date | None, until: date | None, client: str | None, campaign: str | None) -> None:
        self.since, self.until, self.client, self.campaign = since, until, client, campaign
        # decided_at is always written by schema.rfc3339: the same format compares as text
        self.low = None if since is None else rfc3339(_start_of(since))
        self.high = None if until is None else rfc3339(_start_of(until + timedelta(days=1)))

    def matches(self, record: dict[str, Any]) -> bool:
        stamp = record.get("decided_at")
        if not isinstance(stamp, str):
            return True  # counted as not replayable
        if self.low is not None and stamp < self.low:
            return False
        if self.high is not None and stamp >= self.high:
            return False
        if self.client is not None or self.campaign is not None:
            intent = record.get("intent") or {}
            if self.client is not None and intent.get("client_id") != self.client:
                return False
            if self.campaign is not None and intent.get("campaign_id") != self.campaign:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "client": self.client,
            "campaign": self.campaign,
        }


class _Progress:
    """A progress line on a terminal only (stderr), at most twice a second."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.started = self.shown = time.monotonic()

    def tick(self, replay: Replay) -> None:
        now = time.monotonic()
        if self.on and now - self.shown >= 0.5:
            self.shown = now
            rate = replay.records / max(now - self.started, 1e-9)
            print(f"\rreplay: {replay.records:,} records, {replay.changed:,} changed ({rate:,.0f}/s)", end="",
                  file=sys.stderr, flush=True)  # fmt: skip

    def done(self) -> None:
        if self.on:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


async def _replay(settings: Settings, source: str, filters: Filters, replay: Replay) -> None:
    progress = _Progress()
    records = _from_store(settings, filters) if source == "store" else _from_topic(settings)
    count = 0
    try:
        async for value in records:
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                replay.add_bytes(value)  # counted as not replayable
                continue
            if isinstance(record, dict) and not filters.matches(record):
                continue
            if isinstance(record, dict):
                replay.add(record)
            else:
                replay.add_bytes(value)
            count += 1
            if count % 1000 == 0:
                progress.tick(replay)
    finally:
        progress.done()


async def _from_store(settings: Settings, filters: Filters) -> AsyncIterator[bytes]:
    """The stored records (exact bytes) matching the filters, in audit-topic order, streamed by a cursor."""
    import asyncpg

    where: list[str] = []
    params: list[Any] = []
    if filters.since is not None:
        params.append(_start_of(filters.since))
        where.append(f"decided_at >= ${len(params)}")
    if filters.until is not None:
        params.append(_start_of(filters.until + timedelta(days=1)))
        where.append(f"decided_at < ${len(params)}")
    if filters.client is not None:
        params.append(filters.client)
        where.append(f"client_id = ${len(params)}")
    if filters.campaign is not None:
        params.append(filters.campaign)
        where.append(f"campaign_id = ${len(params)}")
    query = "SELECT raw FROM callguard_audit" + (f" WHERE {' AND '.join(where)}" if where else "")
    query += " ORDER BY audit_partition, audit_offset"
    where_to = f"audit store at {safe_url(settings.audit_dsn)}"
    try:
        conn = await asyncpg.connect(settings.audit_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach the {where_to}: {exc or type(exc).__name__}") from None
    try:
        async with conn.transaction(readonly=True):
            async for row in conn.cursor(query, *params, prefetch=2000):
                yield bytes(row["raw"])
    except asyncpg.UndefinedTableError:
        return  # the sink never ran: nothing stored
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unreachable(f"reading the {where_to}: {exc or type(exc).__name__}") from None
    finally:
        await conn.close()


async def _from_topic(settings: Settings) -> AsyncIterator[bytes]:
    """Every record of every partition of ``callguard.audit``, partition by partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from callguard.config import broker_hosts, kafka_security
    from callguard.kafka.access import refuse_hidden_topic
    from callguard.kafka.auditlog import read_partition

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker problem is reported in our own line
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_hosts(settings.broker),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **kafka_security(settings),
    )
    try:
        try:
            await consumer.start()
            # a consumer's first metadata request names no topic: ask for every topic's
            await consumer._client.force_metadata_update()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot reach the broker at {settings.broker}: {exc or type(exc).__name__}") from None
        partitions = sorted(consumer.partitions_for_topic(AUDIT_TOPIC) or ())
        if not partitions:  # no such topic, or one the broker's ACLs hide from this user: say which
            try:
                await refuse_hidden_topic(consumer._client, AUDIT_TOPIC, kafka_security(settings))
            except KafkaError as exc:
                raise Unreachable(f"cannot read {AUDIT_TOPIC} from {settings.broker}: {exc}") from None
        for partition in partitions:
            try:
                async for stored in read_partition(consumer, TopicPartition(AUDIT_TOPIC, partition)):
                    yield stored.value
            except (KafkaError, TimeoutError) as exc:
                raise Unreachable(f"reading {AUDIT_TOPIC} from {settings.broker}: {exc}") from None
    finally:
        await consumer.stop()
