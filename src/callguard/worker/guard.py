"""The guard's shell around the policy: decode a batch, look it up, decide, publish.

Nothing here knows Faust: the worker (``callguard.worker.app``) feeds it batches of
raw messages and a ``send`` function, so the same code serves the worker, the
benchmarks and the tests. Per batch there is one pipelined Redis round trip
and one wait for all sends; per event only decoding and the pure policy.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import orjson

from callguard.core.audit import ChainHeads, link
from callguard.core.facts import Consent, Facts, OptOut, PastCall, intent_ref
from callguard.core.numbers import normalise, normalise_caller_id
from callguard.core.policy import Decision, PolicySettings, decide, malformed, silent_rate_days
from callguard.core.rows import consent_row, parse_when
from callguard.core.schema import (
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    DECISIONS_TOPIC,
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    SILENT_OUTCOMES,
    Intent,
    MalformedIntent,
    dumps,
    parse_intent,
    parse_outcome,
    rfc3339,
)
from callguard.retry import retry
from callguard.storage.stores import NO_CAMPAIGN, Allowed, LookupUnavailable, Query
from callguard.worker.metrics import Metrics
from callguard.worker.ports import GuardStores

T = TypeVar("T")

log = logging.getLogger("callguard.guard")

#: ``send(messages)`` publishes messages, each (topic, key, value, partition;
#: ``partition`` None: by key), and returns where each was written, in order,
#: as (partition, offset), once the broker acknowledged them all; it raises if
#: any failed, after the others settled (``publishing.BatchPublisher``).
Send = Callable[[Sequence[tuple[str, bytes | None, bytes, int | None]]], Awaitable[Sequence[tuple[int, int]]]]

#: A message to publish: topic, key, value, partition. An audit record is
#: still a dict: it is chained to its partition's head when sent.
Outgoing = tuple[str, bytes | None, "bytes | dict[str, Any]", int | None]


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_millisecond(moment: datetime) -> datetime:
    """Decision times are kept to the millisecond, as published and as the
    frequency-cap script compares them, so that both judge alike."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class Raw:
    """One message as it came off a topic."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None

    def source(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


def deadletter_record(raw: Raw, error: str, intent_id: str | None, now: datetime) -> bytes:
    """What ``callguard.deadletter`` carries: the raw bytes (base64, and as
    text when they are UTF-8), the error, and where the message came from."""
    value = raw.value or b""
    try:
        text: str | None = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return dumps(
        {
            "error": error,
            "intent_id": intent_id,
            "source": raw.source(),
            "raw": text,
            "raw_base64": base64.b64encode(value).decode("ascii"),
            "at": rfc3339(now),
        }
    )


class Guard:
    """Decides batches of intents and applies batches of opt-outs."""

    def __init__(
        self,
        stores: GuardStores,
        send: Send,
        policy: PolicySettings,
        default_region: str,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        chain: ChainHeads | None = None,
        audit_partitions: int = 1,
    ) -> None:
        self.stores = stores
        self.send = send
        self.chain = chain if chain is not None else ChainHeads(_no_tail)
        self.audit_partitions = audit_partitions
        self.policy = policy
        self.region = default_region
        self.metrics = metrics if metrics is not None else Metrics(process=False)
        self.clock = clock
        self.redis_failing = 0  # batches denied lookup_unavailable in a row (logged on change, not per batch)

    async def handle_intents(self, batch: Sequence[Raw]) -> list[Decision]:
        """Decide every intent of the batch and publish decisions, audit
        records and dead letters; returns only once the broker has
        acknowledged them all, so the caller may then commit offsets."""
        now = to_millisecond(self.clock())
        valid: list[tuple[Raw, Intent, str | None]] = []
        out: list[Outgoing] = []
        decisions: list[Decision] = []
        for raw in batch:
            try:
                intent = parse_intent(raw.value)
            except MalformedIntent as exc:
                self.metrics.deadlettered(raw.topic)
                out.append((DEADLETTER_TOPIC, None, deadletter_record(raw, exc.error, exc.intent_id, now), None))
                if exc.intent_id is not None:
                    decision = malformed(exc.intent_id, exc.error, now, self.policy)
                    decisions.append(decision)
                    out += self._decision_messages(decision, None, raw)
                log.info("malformed intent at %s/%d@%d: %s", raw.topic, raw.partition, raw.offset, exc.error)
                continue
            valid.append((raw, intent, normalise(intent.callee, self.region)))
        if valid:
            facts = await self._lookup(
                [self._query(intent, callee) for _, intent, callee in valid], silent_rate_days(now, self.policy)
            )
            decided = self._decide(valid, facts, now)
            await self._record_allowed(valid, facts, decided, now)
            for (raw, intent, _), decision in zip(valid, decided, strict=True):
                decisions.append(decision)
                out += self._decision_messages(decision, intent, raw)
        outcomes: dict[tuple[bool, tuple[str, ...]], int] = {}
        for decision in decisions:
            key = (decision.allow, decision.reasons)
            outcomes[key] = outcomes.get(key, 0) + 1
        await self._publish(out)
        done = time.time()
        self.metrics.batch_decided(
            len(batch), outcomes, [done - raw.timestamp for raw in batch if raw.timestamp is not None]
        )
        return decisions

    def _query(self, intent: Intent, callee: str | None) -> Query:
        """What to look up for one intent: with the named registers its callee's pack reads."""
        registers = self.policy.named_registers(callee, intent.purpose)
        return Query(callee, intent.client_id, intent.operator_id, intent.campaign_id, registers)

    def _capped(self, intent: Intent, callee: str | None) -> bool:
        """Whether the frequency caps count this intent's allow (its callee's pack says)."""
        pack = self.policy.pack_for(callee, intent.purpose)
        return pack is not None and pack.applies("frequency_cap", intent.purpose)

    def _decide(
        self, valid: Sequence[tuple[Raw, Intent, str | None]], facts: Sequence[Facts | None], now: datetime
    ) -> list[Decision]:
        """Decide in order; an allow counts at once for later intents of the
        batch to the same callee and client (frequency caps)."""
        policy, region = self.policy, self.region
        earlier: dict[tuple[str, str], list[PastCall]] = {}
        decided: list[Decision] = []
        for (_, intent, callee), fact in zip(valid, facts, strict=True):
            key = (callee or "", intent.client_id)
            if fact is not None and key in earlier:
                fact = replace(fact, calls=fact.calls + tuple(earlier[key]))
            decision = decide(intent, callee, fact, now, policy, normalise_caller_id(intent.caller_id, region))
            if decision.allow and callee is not None and self._capped(intent, callee):
                earlier.setdefault(key, []).append(PastCall(now, intent_ref(intent.intent_id)))
            decided.append(decision)
        return decided

    async def _record_allowed(
        self,
        valid: Sequence[tuple[Raw, Intent, str | None]],
        facts: Sequence[Facts | None],
        decided: list[Decision],
        now: datetime,
    ) -> None:
        """Record the batch's allows in Redis before any is published (caps,
        outcome tracing). An allow whose cap filled up meanwhile (another
        worker) is decided again with the stored calls; when Redis cannot
        record, the allows become ``lookup_unavailable`` denies: an allow
        that was not counted would break the caps."""
        policy = self.policy
        index = [i for i, decision in enumerate(decided) if decision.allow]
        if not index:
            return
        allowed = []
        for i in index:
            intent, callee = valid[i][1], valid[i][2]
            assert callee is not None  # an allow always has a valid callee
            pack = policy.pack_for(callee, intent.purpose)
            assert pack is not None  # an allow was decided by a pack
            capped = pack.applies("frequency_cap", intent.purpose)
            limits = tuple((limit.window, limit.max_calls) for limit in pack.cap_limits(callee))
            allowed.append(
                Allowed(
                    callee,
                    intent.client_id,
                    intent.intent_id,
                    intent.campaign_id,
                    capped,
                    limits,
                    pack.longest_cap_window,
                )
            )
        try:
            replies = await self.stores.record_allowed(allowed, now)
        except Exception as exc:  # fail closed, like a failed lookup
            self.metrics.lookup_failed()
            log.warning(
                "redis could not record %d allowed intents (%s): denying them with lookup_unavailable",
                len(index),
                exc,
                extra={"event": "redis_record_failed"},
            )
            for i in index:
                _, intent, callee = valid[i]
                decided[i] = decide(intent, callee, None, now, policy)
            return
        for i, stored in zip(index, replies, strict=True):
            fact = facts[i]
            if stored is None or fact is None:
                continue
            _, intent, callee = valid[i]
            self.metrics.cap_races.inc()
            caller = normalise_caller_id(intent.caller_id, self.region)
            decided[i] = decide(intent, callee, replace(fact, calls=stored), now, policy, caller)

    async def _lookup(self, queries: list[Query], outcome_days: Sequence[date] = ()) -> list[Facts | None]:
        started = time.perf_counter()
        try:
            facts: list[Facts | None] = list(await self.stores.lookup(queries, outcome_days))
        except Exception as exc:  # Redis down, slow, or a stored value that does not parse: fail closed
            self.metrics.lookup_failed()
            self.redis_failing += 1
            error = str(exc) if isinstance(exc, LookupUnavailable) else type(exc).__name__
            # one warning when Redis starts failing, then debug: an outage must not flood the logs
            level = logging.WARNING if self.redis_failing == 1 else logging.DEBUG
            log.log(
                level,
                "redis lookup failed (%s): denying %d intents with lookup_unavailable",
                error,
                len(queries),
                extra={"event": "redis_lookup_failed"},
            )
            return [None] * len(queries)
        self.metrics.redis_seconds.observe(time.perf_counter() - started)
        if self.redis_failing:
            log.info(
                "redis lookups answer again after %d failed batches",
                self.redis_failing,
                extra={"event": "redis_lookup_recovered"},
            )
            self.redis_failing = 0
        return facts

    async def handle_optouts(self, batch: Sequence[Raw]) -> int:
        """Apply opt-outs from ``callguard.optouts``; bad ones go to the dead
        letters. Retries Redis until it answers: an opt-out is never dropped."""
        now = self.clock()
        parsed, out = self._parse_all(batch, lambda raw: self._parse_optout(raw, now), "opt-out", now)
        rows = [row for _, row in parsed]
        await self._retry_redis("optouts", len(rows), lambda: self.stores.add_optouts(rows))
        await self._publish(out)
        self.metrics.optouts_applied(len(rows))
        return len(rows)

    async def handle_consents(self, batch: Sequence[Raw]) -> int:
        """Apply consents, contracts and call requests from ``callguard.consents``
        (validated like a line of ``consents load``); bad ones go to the dead
        letters. Retries Redis until it answers: a consent is never dropped."""
        now = self.clock()
        parsed, out = self._parse_all(batch, self._parse_consent, "consent", now)
        rows = [row for _, row in parsed]
        await self._retry_redis("consents", len(rows), lambda: self.stores.upsert_consents(rows))
        await self._publish(out)
        self.metrics.consents.inc(len(rows))
        return len(rows)

    def _parse_all(
        self, batch: Sequence[Raw], parse: Callable[[Raw], T], what: str, now: datetime
    ) -> tuple[list[tuple[Raw, T]], list[Outgoing]]:
        """``parse`` each message; one that raises ``ValueError`` becomes a dead
        letter with its error (the worker never stops on bad input)."""
        parsed: list[tuple[Raw, T]] = []
        out: list[Outgoing] = []
        for raw in batch:
            try:
                parsed.append((raw, parse(raw)))
            except ValueError as exc:
                self.metrics.deadlettered(raw.topic)
                out.append((DEADLETTER_TOPIC, None, deadletter_record(raw, str(exc), None, now), None))
                log.info("malformed %s at %s/%d@%d: %s", what, raw.topic, raw.partition, raw.offset, exc)
        return parsed, out

    def _parse_consent(self, raw: Raw) -> tuple[str, Consent]:
        obj = _json_object(raw)
        row: dict[str, str] = {}
        for name in ("callee", "client_id", "basis", "granted_at", "ends_at"):
            value = obj.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} must be a string")
            row[name] = value
        for name in ("callee", "client_id", "basis", "granted_at"):
            if name not in row:
                raise ValueError(f"missing field {name!r}")
        return consent_row(row, self.region, self.policy.timezone)

    async def _retry_redis(self, what: str, count: int, write: Callable[[], Awaitable[Any]]) -> Any:
        """``write()`` until Redis answers: what arrives on a topic is never dropped."""
        if not count:
            return None

        def failed(exc: Exception, delay: float) -> None:  # any Redis failure: retry
            self.metrics.redis_errors.labels(what).inc()
            log.warning("redis unavailable applying %d %s (%s); retrying in %.1fs", count, what, exc, delay)

        return await retry(write, failed)

    async def handle_outcomes(self, batch: Sequence[Raw]) -> int:
        """Apply call outcomes from ``callguard.outcomes``: count them per
        campaign and block the callee after a silent or abandoned call.
        Malformed outcomes, and outcomes of intents this guard did not allow
        (or allowed more than three days ago), go to the dead letters.
        Retries Redis until it answers: an outcome is never dropped."""
        now = self.clock()
        reports, out = self._parse_all(batch, lambda raw: parse_outcome(raw.value), "outcome", now)
        pairs = [(report, report.outcome in SILENT_OUTCOMES) for _, report in reports]
        results: list[str | int] = (
            await self._retry_redis(
                "outcomes", len(reports), lambda: self.stores.apply_outcomes(pairs, self.policy.timezone)
            )
            or []
        )
        applied = 0
        for (raw, report), result in zip(reports, results, strict=True):
            if isinstance(result, str):
                applied += 1
                self.metrics.outcomes.labels(result if result != NO_CAMPAIGN else "none", report.outcome.value).inc()
            elif result == 0:
                error = "unknown intent_id: not allowed by this guard, or decided more than 3 days ago"
                self.metrics.deadlettered(raw.topic)
                out.append((DEADLETTER_TOPIC, None, deadletter_record(raw, error, report.intent_id, now), None))
        await self._publish(out)
        return applied

    def _parse_optout(self, raw: Raw, now: datetime) -> tuple[str, OptOut]:
        obj = _json_object(raw)
        callee, client_id, at = obj.get("callee"), obj.get("client_id"), obj.get("at")
        if not isinstance(callee, str):
            raise ValueError("field 'callee' must be a string")
        e164 = normalise(callee, self.region)
        if e164 is None:
            raise ValueError("field 'callee' is not a valid phone number")
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= MAX_ID_LENGTH or "|" in client_id:
            raise ValueError(f"field 'client_id' must be a string of 1-{MAX_ID_LENGTH} characters (or '*')")
        if at is None:
            when = now if raw.timestamp is None else datetime.fromtimestamp(raw.timestamp, UTC)
            return e164, OptOut(client_id, when)
        if not isinstance(at, str):
            raise ValueError("field 'at' must be an ISO date or RFC 3339 string")
        return e164, OptOut(client_id, parse_when(at, self.policy.timezone))

    def _decision_messages(self, decision: Decision, intent: Intent | None, raw: Raw) -> list[Outgoing]:
        """The decision (partitioned by its key) and the audit record, which goes
        to the audit partition numbered like the intent's partition: that
        partition has one writer, the worker that owns the intent partition,
        so its hash chain is never forked by two workers."""
        key = decision.intent_id.encode()
        message = decision.to_message()
        return [
            (DECISIONS_TOPIC, key, dumps(message), None),
            (AUDIT_TOPIC, key, decision.to_audit(intent, raw.source(), message), raw.partition % self.audit_partitions),
        ]

    async def _publish(self, messages: list[Outgoing]) -> None:
        """Send all messages and wait for every acknowledgement; on a broker
        error, send the whole batch again (at-least-once: a duplicate carries
        the same decision, a loss would leave a dialer waiting). Audit records
        are chained at send time; after a failure the heads are reloaded from
        the broker, so whatever did get written stays in the chain."""
        if not messages:
            return

        async def attempt() -> None:
            generation = self.chain.generation
            heads = await self.chain.load({p for _, _, v, p in messages if isinstance(v, dict) and p is not None})
            encoded: list[tuple[str, bytes | None, bytes, int | None]] = []
            chained: list[tuple[int, str]] = []
            for topic, key, value, partition in messages:
                if isinstance(value, dict):
                    assert partition is not None  # audit records are always partitioned
                    value, heads[partition] = link(value, heads[partition])
                    chained.append((len(encoded), heads[partition]))
                encoded.append((topic, key, value, partition))
            written = await self.send(encoded)
            self.chain.advance(heads, generation)
            for index, head in chained:
                partition, offset = written[index]
                self.chain.acknowledged[partition] = (offset, head)

        def failed(exc: Exception, delay: float) -> None:  # any producer failure: retry the whole batch
            self.chain.forget()  # reloaded from the broker: what did get written stays in the chain
            self.metrics.publish_errors.inc()
            log.warning("publishing %d messages failed (%s); retrying in %.1fs", len(messages), exc, delay)

        await retry(attempt, failed)


def _json_object(raw: Raw) -> dict[str, Any]:
    """A message's JSON object, or ``ValueError`` saying what it is instead."""
    if raw.value is None or len(raw.value) > MAX_MESSAGE_BYTES:
        raise ValueError("empty or oversized message")
    try:
        obj = orjson.loads(raw.value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


async def _no_tail(partition: int) -> bytes | None:
    """For a guard without a broker to read from (tests, benchmarks): every chain starts afresh."""
    return None
