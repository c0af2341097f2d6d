"""Redis-backed stores: the register cache, operators, consents and opt-outs.

The keys and what each holds: :mod:`callguard.storage.keys`; the Lua scripts:
:mod:`callguard.storage.scripts`.

Register results are packed into one string per bucket of 10 000 numbers,
binary-searched by the lookup script, and loaded atomically (staged, then
committed at once): :mod:`callguard.storage.register` describes the encoding, the hash
tags and what a reader can observe during a load. One intent costs one
register ``GET`` and one ``HMGET``, a batch one more for its operators, all
inside one server-side script: one round trip and one reply per batch
(:meth:`Stores.lookup`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from callguard.core.facts import (
    Consent,
    Facts,
    Mandate,
    NamedResult,
    Operator,
    OptOut,
    PastCall,
    RegisterResult,
    When,
    intent_ref,
)
from callguard.core.schema import ALL_CLIENTS, OutcomeReport
from callguard.core.tokens import TokenGrant
from callguard.storage import register as register_store
from callguard.storage.connection import connect
from callguard.storage.keys import (
    AUDIT_HEADS_KEY,
    CALLEE_PREFIX,
    CENSUS_KEY,
    HIDDEN_KEY,
    LOADS_KEY,
    MANDATES_KEY,
    META_KEY,
    OPERATORS_KEY,
    TOKEN_NAMES_KEY,
    TOKENS_KEY,
    TOKENS_USED_KEY,
    callee_key,
    cover_key,
    intent_key,
    outcome_days_key,
    register_key,
    staging_key,
)
from callguard.storage.register import RegisterRows, cover_field, register_result
from callguard.storage.scripts import APPLY_OUTCOMES, LOOKUP, RECORD_ALLOWED, WRITE_IF_NOT_OLDER

#: How long an allowed intent is remembered for its outcome: outcomes that
#: arrive later are dead-lettered as unknown.
OUTCOME_MEMORY = timedelta(days=3)
#: How long per-day outcome counters are kept (abandoned-call rates over 30 days).
OUTCOME_COUNTERS_LIFETIME = timedelta(days=40)
#: ``campaign_id`` of intents that named none, in outcome counters.
NO_CAMPAIGN = "-"


@dataclass(frozen=True, slots=True)
class Allowed:
    """An allowed intent to record: ``capped`` when the frequency caps count it,
    with its own caps (``limits``; None: the batch's) and how long its callee's
    calls are kept (``keep``; None: the longest of its caps)."""

    callee: str
    client_id: str
    intent_id: str
    campaign_id: str | None
    capped: bool
    limits: tuple[tuple[timedelta, int], ...] | None = None
    keep: timedelta | None = None


def _ms(span: timedelta) -> int:
    return int(span / timedelta(milliseconds=1))


def cap_arguments(item: Allowed, limits: Sequence[tuple[timedelta, int]]) -> list[int]:
    """An allowed intent's keep (ms), the number of its caps and each (window ms, max)."""
    own = limits if item.limits is None else item.limits
    keep = item.keep if item.keep is not None else max((window for window, _ in own), default=timedelta(0))
    args = [_ms(keep), len(own)]
    for window, maximum in own:
        args += (_ms(window), maximum)
    return args


def parse_calls(raw: str | None) -> tuple[PastCall, ...]:
    """``"{ms}:{ref},…"`` as past calls, oldest first."""
    if not raw:
        return ()
    calls = []
    for item in raw.split(","):
        stamp, _, ref = item.partition(":")
        calls.append(PastCall(datetime.fromtimestamp(int(stamp) / 1000, UTC), ref))
    return tuple(calls)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_census(raw: dict[str, str]) -> dict[str, dict[date, int]]:
    """``cg:register:census`` as {scope: {as-of day: numbers}}."""
    census: dict[str, dict[date, int]] = {}
    for field, count in raw.items():
        scope, _, day = field.rpartition("|")
        if int(count) > 0:
            census.setdefault(scope, {})[date.fromisoformat(day)] = int(count)
    return census


class LookupUnavailable(Exception):
    """Redis did not answer (down, timed out, or returned an error)."""


@lru_cache(maxsize=16_384)
def parse_stored_when(text: str) -> When:
    """A point in time as stored (:func:`format_when`): ``YYYY-MM-DD`` or an
    ISO datetime with offset. Unlike :func:`callguard.storage.loaders.parse_when`
    (people's files) it trusts its input and needs no time zone."""
    if len(text) == 10:
        return date.fromisoformat(text)
    return datetime.fromisoformat(text)


def format_when(when: When) -> str:
    """Store datetimes in UTC so that stored strings sort in time order."""
    if isinstance(when, datetime):
        return when.astimezone(UTC).isoformat()
    return when.isoformat()


@lru_cache(maxsize=4_096)
def _operator(operator_id: str, value: str) -> Operator:
    status, valid_from, valid_until, caller_ids, *country = value.split("|")  # no country: stored before it existed
    return Operator(
        operator_id=operator_id,
        status=cast(Any, status),
        valid_from=date.fromisoformat(valid_from),
        valid_until=date.fromisoformat(valid_until),
        caller_ids=tuple(c for c in caller_ids.split(";") if c),
        country=country[0] if country else "IT",
    )


def operator_value(operator: Operator) -> str:
    """The stored form; the country only when it is not Italy, so that a
    worker of an earlier version still reads an Italian operator."""
    fields = [operator.status, operator.valid_from.isoformat(), operator.valid_until.isoformat()]
    fields.append(";".join(operator.caller_ids))
    if operator.country != "IT":
        fields.append(operator.country)
    return "|".join(fields)


def mandate_field(client_id: str, operator_id: str) -> str:
    return f"{client_id}|{operator_id}"


def mandates_by_field(mandates: Iterable[Mandate]) -> dict[str, str]:
    """The ``cg:mandates`` hash: every period of a client and operator in one field."""
    periods: dict[str, list[str]] = {}
    for m in mandates:
        periods.setdefault(mandate_field(m.client_id, m.operator_id), []).append(
            f"{m.valid_from.isoformat()}|{m.valid_until.isoformat()}"
        )
    return {field: ";".join(sorted(values)) for field, values in periods.items()}


@lru_cache(maxsize=4_096)
def parse_mandates(field: str, value: str | None) -> tuple[Mandate, ...]:
    if not value:
        return ()
    client_id, _, operator_id = field.partition("|")
    out = []
    for period in value.split(";"):
        valid_from, _, valid_until = period.partition("|")
        out.append(Mandate(client_id, operator_id, date.fromisoformat(valid_from), date.fromisoformat(valid_until)))
    return tuple(out)


def consent_value(consent: Consent) -> str:
    return format_when(consent.granted_at) + "|" + ("" if consent.ends_at is None else format_when(consent.ends_at))


def _consent(client_id: str, basis: str, value: str) -> Consent:
    granted_at, ends_at = value.split("|")
    return Consent(
        client_id, cast(Any, basis), parse_stored_when(granted_at), parse_stored_when(ends_at) if ends_at else None
    )


@dataclass(frozen=True, slots=True)
class Query:
    """What one intent needs looked up."""

    callee: str | None  # E.164, or None when invalid (only the operator is looked up)
    client_id: str
    operator_id: str
    campaign_id: str | None = None
    #: the named registers (``register load --register NAME``) the callee's pack reads
    registers: tuple[str, ...] = ()


def named_result(name: str, cover: str | None, entry: int | None) -> NamedResult:
    """A named register's answer for one number: its coverage (``"{generation}|{as_of}"``,
    ``"{generation}|{as_of}|{next generation}"`` while a cluster load commits) and the
    number's entry (``generation << 16 | payload``) if the buckets hold one."""
    if not cover:
        return NamedResult(name, False, None)
    parts = cover.split("|")
    generations = {int(parts[0])} | ({int(parts[2])} if len(parts) > 2 else set())
    listed = entry is not None and entry >> 16 in generations
    return NamedResult(name, listed, date.fromisoformat(parts[1]))


#: The ``cg:meta`` counter of each consent basis (``callguard status``).
COUNTERS = {
    "consent": "consents",
    "contract": "contracts",
    "request": "requests",
    "ebr_transaction": "ebr_transactions",
    "ebr_inquiry": "ebr_inquiries",
}

#: The outcomes a campaign's silent-call rate counts (callguard.core.policy.check_campaign_silent_rate).
RATE_OUTCOMES = ("answered", "silent", "abandoned")


def directory_listed(reply: Any, generation: int | None) -> bool:
    """Whether a lookup's directory answer (the generation of the number's
    entry, or false) belongs to the extract in use."""
    return generation is not None and reply is not None and reply is not False and int(reply) == generation


#: Seconds a failed replica is left alone before lookups try it again.
REPLICA_PAUSE = 5.0

log = logging.getLogger("callguard.stores")


class StaleReplica(RedisError):
    """The replica is not linked to its primary: what it holds may be old."""


class Stores:
    """All Redis access of callguard, reads batched into one round trip."""

    #: a Redis Cluster (callguard.storage.cluster.ClusterStores): no transaction spans keys of several slots
    cluster = False

    def __init__(
        self, client: aioredis.Redis, url: str, replica: aioredis.Redis | None = None, timeout: float = 1.0
    ) -> None:
        """``client`` and ``replica`` as :func:`callguard.storage.factory.open_stores`
        builds them, from ``url`` with ``timeout``."""
        self.redis = client
        self.url = url  # lets register loads merge in several processes
        self.timeout = timeout
        #: Where batch lookups go first, when set (a replica of ``client``); writes never go there.
        self.replica = replica
        self._replica_back_at = 0.0  # after a failure the replica is left alone until then
        self._replica_checked_at = -1.0  # when its link to the primary was last seen up
        self._raw: aioredis.Redis | None = None  # bytes replies: register buckets
        self._write_if_not_older = client.register_script(WRITE_IF_NOT_OLDER)
        self._lookup_script = client.register_script(LOOKUP)
        self._record_script = client.register_script(RECORD_ALLOWED)
        self._outcomes_script = client.register_script(APPLY_OUTCOMES)

    @property
    def raw(self) -> aioredis.Redis:
        """A client on the same server that answers bytes (register buckets)."""
        if self._raw is None:
            self._raw = connect(self.url, self.timeout, decode_responses=False)
        return self._raw

    async def close(self) -> None:
        if self._raw is not None:
            await self._raw.aclose()
        if self.replica is not None:
            await self.replica.aclose()
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    # --- reads ---------------------------------------------------------------

    async def lookup(self, queries: Sequence[Query], outcome_days: Sequence[date] = ()) -> list[Facts]:
        """Look up the facts of a whole batch in one script call (one round trip).

        ``outcome_days``: the days whose outcome counters make each intent's
        campaign silent-call rate (none: not looked up). Raises
        :class:`LookupUnavailable` on any Redis error or timeout: the caller
        then denies the whole batch with ``lookup_unavailable``.
        """
        operator_ids = list(dict.fromkeys(q.operator_id for q in queries))
        pairs = list(dict.fromkeys(mandate_field(q.client_id, q.operator_id) for q in queries))
        campaigns = list(dict.fromkeys(q.campaign_id or NO_CAMPAIGN for q in queries)) if outcome_days else []
        fields = [f"{campaign}|{outcome}" for campaign in campaigns for outcome in RATE_OUTCOMES]
        names = list(dict.fromkeys(name for q in queries if q.callee is not None for name in q.registers))
        units = ["*"]
        if names:
            units += dict.fromkeys(cover_field(q.callee) for q in queries if q.callee is not None and q.registers)
        keys = [OPERATORS_KEY, META_KEY, MANDATES_KEY, HIDDEN_KEY, *(outcome_days_key(day) for day in outcome_days)]
        keys += (cover_key(name) for name in names)
        args: list[str] = [str(len(operator_ids)), *operator_ids, str(len(pairs)), *pairs]
        args += (str(len(outcome_days)), str(len(fields)), *fields)
        args += (str(len(names)), str(len(units)), *units)
        for q in queries:
            if q.callee is not None:
                bucket, suffix = register_key(q.callee)
                keys += (bucket, callee_key(q.callee))
                args += (str(suffix), q.client_id)
        try:
            replies = await self._lookup_replies(keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise LookupUnavailable(type(exc).__name__) from exc
        operators = {
            op_id: None if value is None else _operator(op_id, value)
            for op_id, value in zip(operator_ids, replies[0], strict=True)
        }
        operators_version, generation_text, directory_day, mandates_version = replies[1]
        generation = int(generation_text) if generation_text else None
        directory_as_of = date.fromisoformat(directory_day) if directory_day else None
        versions: dict[str, str | None] = {"operators": operators_version, "mandates": mandates_version}
        mandates = {pair: parse_mandates(pair, value) for pair, value in zip(pairs, replies[3], strict=True)}
        outcomes: dict[str, dict[str, int]] = {campaign: {} for campaign in campaigns}
        for day in replies[2]:
            for index, count in enumerate(day):
                if count is not None:
                    per = outcomes[campaigns[index // len(RATE_OUTCOMES)]]
                    outcome = RATE_OUTCOMES[index % len(RATE_OUTCOMES)]
                    per[outcome] = per.get(outcome, 0) + int(count)
        cover = {name: dict(zip(units, reply, strict=True)) for name, reply in zip(names, replies[4], strict=True)}
        facts: list[Facts] = []
        position = 5
        for q in queries:
            operator = operators[q.operator_id]
            campaign_outcomes = outcomes[q.campaign_id or NO_CAMPAIGN] if outcome_days else None
            mandated = mandates[mandate_field(q.client_id, q.operator_id)]
            if q.callee is None:
                facts.append(
                    Facts(operator=operator, versions=versions, campaign_outcomes=campaign_outcomes, mandates=mandated)
                )
                continue
            reg_all, reg_client, listed, named = replies[position]
            (
                consent,
                contract,
                optout_client,
                optout_all,
                calls,
                silent,
                request,
                ebr_transaction,
                ebr_inquiry,
                cut,
            ) = replies[position + 1]
            position += 2
            register: list[RegisterResult] = []
            if reg_all is not None:
                register.append(register_result(reg_all, ALL_CLIENTS))
            if reg_client is not None:
                register.append(register_result(reg_client, q.client_id))
            consents: list[Consent] = []
            if consent is not None:
                consents.append(_consent(q.client_id, "consent", consent))
            if contract is not None:
                consents.append(_consent(q.client_id, "contract", contract))
            if request is not None:
                consents.append(_consent(q.client_id, "request", request))
            if ebr_transaction is not None:
                consents.append(_consent(q.client_id, "ebr_transaction", ebr_transaction))
            if ebr_inquiry is not None:
                consents.append(_consent(q.client_id, "ebr_inquiry", ebr_inquiry))
            registers: dict[str, NamedResult] = {}
            if q.registers:
                entries = dict(zip(named[::2], named[1::2], strict=True)) if named else {}
                unit = cover_field(q.callee)
                for name in q.registers:
                    held = cover[name]
                    registers[name] = named_result(name, held.get(unit) or held.get("*"), entries.get("@" + name))
            optouts: list[OptOut] = []
            if optout_client is not None:
                optouts.append(OptOut(q.client_id, parse_stored_when(optout_client)))
            if optout_all is not None:
                optouts.append(OptOut(ALL_CLIENTS, parse_stored_when(optout_all)))
            facts.append(
                Facts(
                    operator,
                    tuple(register),
                    tuple(consents),
                    tuple(optouts),
                    versions,
                    parse_calls(calls),
                    None if silent is None else cast(datetime, parse_stored_when(silent)),
                    listed=directory_listed(listed, generation),
                    directory_as_of=directory_as_of,
                    campaign_outcomes=campaign_outcomes,
                    mandates=mandated,
                    registers=registers,
                    disconnected_at=date.fromisoformat(cut) if cut else None,
                )
            )
        return facts

    @property
    def replica_state(self) -> str | None:
        """``None`` without a replica; ``in_use``, or ``failing`` while the primary answers the lookups."""
        if self.replica is None:
            return None
        return "failing" if self._replica_back_at else "in_use"

    async def _check_replica_link(self) -> None:
        """Raise unless every replica that answers lookups is linked to its
        primary (checked at most once a second): a replica cut off from its
        primary keeps answering with what it had, and would miss every
        opt-out since."""
        now = time.monotonic()
        if now - self._replica_checked_at < 1.0:
            return
        for role in await self._replica_roles():
            if role[0] == "slave" and role[3] != "connected":
                raise StaleReplica(f"replica link to its primary is {role[3]}")
        self._replica_checked_at = now

    async def _replica_roles(self) -> list[Any]:
        """The ``ROLE`` reply of each replica that answers lookups (here: the one)."""
        return [await cast(Any, self.replica).execute_command("ROLE")]

    async def _lookup_replies(self, keys: list[str], args: list[str]) -> list[Any]:
        """The lookup script's replies (from the replica, when there is one and it answers)."""
        return cast(
            list[Any], await self._read(lambda client: self._lookup_script(keys=keys, args=args, client=client))
        )

    async def _read(self, run: Callable[[Any], Awaitable[Any]]) -> Any:
        """``run(client)`` on the replica when there is one, it answers and is
        linked to its primary, else on the primary: a replica down costs one
        timeout, then it is left alone for :data:`REPLICA_PAUSE` seconds."""
        if self.replica is not None and time.monotonic() >= self._replica_back_at:
            try:
                await self._check_replica_link()
                result = await run(self.replica)
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                if not self._replica_back_at:
                    log.warning(
                        "redis replica failed (%s): lookups go to the primary, the replica is tried again every %.0fs",
                        exc if isinstance(exc, StaleReplica) else type(exc).__name__,
                        REPLICA_PAUSE,
                        extra={"event": "redis_replica_failed"},
                    )
                self._replica_back_at = time.monotonic() + REPLICA_PAUSE
            else:
                if self._replica_back_at:
                    log.info("redis replica answers lookups again", extra={"event": "redis_replica_recovered"})
                    self._replica_back_at = 0.0
                return result
        return await run(self.redis)

    async def record_allowed(
        self, allowed: Sequence[Allowed], now: datetime, limits: Sequence[tuple[timedelta, int]] = ()
    ) -> list[tuple[PastCall, ...] | None]:
        """Count a batch's allowed intents against the frequency caps and
        remember them for their outcomes, in one atomic script call.

        Returns per intent ``None`` when recorded (or recorded before), else
        the callee's calls as stored, when a cap filled up meanwhile (another
        worker's allow): the caller decides that intent again with them.
        Raises :class:`LookupUnavailable` on any Redis error.
        """
        if not allowed:
            return []
        stamp = str(epoch_ms(now))
        args: list[str | int] = [int(OUTCOME_MEMORY.total_seconds())]
        keys: list[str] = []
        for item in allowed:
            keys += (callee_key(item.callee), intent_key(item.intent_id))
            args += (
                item.client_id,
                intent_ref(item.intent_id),
                stamp,
                "1" if item.capped else "0",
                item.callee,
                item.campaign_id or NO_CAMPAIGN,
                *cap_arguments(item, limits),
            )
        try:
            replies = await self._record_script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise LookupUnavailable(type(exc).__name__) from exc
        return [None if reply == 1 else parse_calls(reply) for reply in replies]

    async def apply_outcomes(self, outcomes: Sequence[tuple[OutcomeReport, bool]], tz: tzinfo) -> list[str | int]:
        """Apply (outcome, silent) pairs; per outcome its campaign when applied,
        0 when the intent is unknown (never allowed, or older than
        :data:`OUTCOME_MEMORY`), -1 when its outcome was reported before."""
        keys: list[str] = []
        args: list[str | int] = [CALLEE_PREFIX, int(OUTCOME_COUNTERS_LIFETIME.total_seconds())]
        for report, silent in outcomes:
            keys += (intent_key(report.intent_id), outcome_days_key(report.at.astimezone(tz).date()))
            args += (report.outcome.value, format_when(report.at), "1" if silent else "0")
        if not keys:
            return []
        return [x if isinstance(x, str) else int(x) for x in await self._outcomes_script(keys=keys, args=args)]

    async def outcome_counts(self, days: int, today: date) -> dict[str, dict[str, int]]:
        """Per campaign, outcomes reported over the ``days`` days up to ``today`` (Rome days)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for back in range(days):
                pipe.hgetall(outcome_days_key(today - timedelta(days=back)))
            replies = await pipe.execute()
        counts: dict[str, dict[str, int]] = {}
        for reply in replies:
            for field, count in reply.items():
                campaign, _, outcome = field.rpartition("|")
                per = counts.setdefault(campaign, {})
                per[outcome] = per.get(outcome, 0) + int(count)
        return counts

    async def directory_state(self) -> tuple[date, int] | None:
        """The public-directory extract in use: its as-of day and how many numbers it lists."""
        as_of, last = cast(list[str | None], await self.redis.hmget(META_KEY, "directory_as_of", "directory_last_load"))
        if not as_of:
            return None
        rows = int(orjson.loads(last).get("rows", 0)) if last else 0
        return date.fromisoformat(as_of), rows

    async def register_census(self) -> dict[str, dict[date, int]]:
        """Per scope, how many numbers hold a current result of each as-of day
        (kept by the loaders: the oldest day still present is the oldest check in use)."""
        raw: dict[str, str] = await self.redis.hgetall(CENSUS_KEY)  # type: ignore[assignment]
        return parse_census(raw)

    async def counts(self) -> dict[str, Any]:
        """A summary for people (``callguard status`` and the demo)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hlen(OPERATORS_KEY)
            pipe.hgetall(META_KEY)
            pipe.lrange(LOADS_KEY, 0, 9)
            operators, meta, loads = await pipe.execute()
        return {"operators": operators, "meta": meta, "register_loads": [orjson.loads(x) for x in loads]}

    # --- writes ----------------------------------------------------------------

    async def write_if_not_older(
        self,
        triples: Iterable[tuple[str, str, str]],
        width: int,
        chunk: int = 1000,
        tally: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write (key, field, value) triples, each only when not older than what
        is stored (loads accumulate: the most recent result wins). ``tally``
        keeps the counts ``callguard status`` and the metrics read (see the
        script). Each chunk is one atomic script call; ``progress`` gets the
        rows sent so far."""
        written = sent = 0
        counter = tally.removeprefix("count:") if tally.startswith("count:") else ""
        keys: list[str] = [META_KEY]
        args: list[str] = [str(width), counter]
        for key, field, value in triples:
            keys.append(key)
            args += (field, value)
            if len(keys) > chunk:
                written += int(await self._write_if_not_older(keys=keys, args=args))
                sent += len(keys) - 1
                keys, args = [META_KEY], [str(width), counter]
                if progress is not None:
                    progress(sent)
        if len(keys) > 1:
            written += int(await self._write_if_not_older(keys=keys, args=args))
        return written

    async def add_register_results(
        self,
        rows: Iterable[tuple[str, bool, date | None]],
        as_of: date,
        client_id: str,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Add one consultation's results; ``rows`` are (E.164, opposed,
        registered_at). Returns how many rows were applied (not older than
        what was stored). The whole call is one atomic load."""
        spill = RegisterRows.from_rows(rows, expected=len(rows) if isinstance(rows, Sequence) else 0)
        try:
            return (await self.load_register(spill, as_of, client_id, progress=progress)).applied
        finally:
            spill.cleanup()

    async def load_register(
        self,
        rows: RegisterRows,
        as_of: date,
        client_id: str,
        *,
        entry: dict[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
        waiting: Callable[[], None] | None = None,
        grace: float | None = None,
    ) -> register_store.LoadResult:
        """Apply one consultation's validated results atomically: readers see
        the register before the load until its commit, and all of it after
        (:mod:`callguard.storage.register`). The most recent consultation wins per
        number and scope. ``entry`` is logged in ``cg:register:loads`` by the
        commit; ``workers`` > 1 merges in that many processes; ``waiting`` and
        ``grace``: see :func:`callguard.storage.register_load.load`."""
        return await register_store.load(
            self.raw,
            rows,
            as_of,
            client_id,
            entry=entry,
            progress=progress,
            url=self.url,
            workers=workers,
            waiting=waiting,
            grace=grace,
        )

    async def load_directory(
        self,
        rows: RegisterRows,
        as_of: date,
        *,
        entry: dict[str, Any],
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
        waiting: Callable[[], None] | None = None,
        grace: float | None = None,
    ) -> register_store.LoadResult:
        """Replace the public-directory extract with ``rows``, atomically: the
        numbers go into the register's buckets under their own scope and a new
        generation, which the commit makes the one in use (with its as-of day)."""
        current = await self.redis.hget(META_KEY, "directory_generation")
        generation = int(current) % register_store.MAX_GENERATION + 1 if current else 1
        record = orjson.dumps({**entry, "generation": generation}).decode()
        return await register_store.load(
            self.raw,
            rows,
            register_store.EPOCH + timedelta(days=generation),  # the segments' day field holds the generation
            register_store.DIRECTORY_SCOPE,
            progress=progress,
            url=self.url,
            workers=workers,
            waiting=waiting,
            grace=grace,
            replace=True,
            meta={
                "directory_generation": str(generation),
                "directory_as_of": as_of.isoformat(),
                "directory_last_load": record,
            },
        )

    async def load_named_register(
        self,
        rows: RegisterRows,
        name: str,
        as_of: date,
        *,
        everything: bool = False,
        units: frozenset[str] = frozenset(),
        entry: dict[str, Any],
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
        waiting: Callable[[], None] | None = None,
        grace: float | None = None,
    ) -> register_store.LoadResult:
        """Load a register under its own name (``register load --register``):
        the numbers go into the buckets under the scope ``@NAME`` with a new
        generation, which the commit makes the one in use, with ``as_of``, for
        the area codes the rows cover and any of ``units`` (``+1NPA``), or for
        every number (``everything``): the list of those area codes is replaced
        whole. See :data:`callguard.storage.register.NAMED_PREFIX`."""
        counter = await self.redis.hincrby(cover_key(name), "#generation", 1)
        generation = (int(counter) - 1) % register_store.MAX_GENERATION + 1
        record = orjson.dumps({**entry, "generation": generation}).decode()
        coverage = register_store.Coverage(name, generation, as_of, everything, units, record)
        return await register_store.load(
            self.raw,
            rows,
            register_store.EPOCH + timedelta(days=generation),  # the segments' day field holds the generation
            register_store.NAMED_PREFIX + name,
            progress=progress,
            url=self.url,
            workers=workers,
            waiting=waiting,
            grace=grace,
            replace=True,
            coverage=coverage,
        )

    async def named_registers(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """The coverage of named registers (``callguard status``): name -> unit ->
        ``generation|as_of`` (empty: nothing loaded). By name, not by a scan:
        the reader's Redis user may not SCAN."""
        return {name: cast(dict[str, str], await self.redis.hgetall(cover_key(name))) for name in names}

    async def add_disconnections(self, rows: Iterable[tuple[str, date]]) -> int:
        """Record when numbers were permanently disconnected (``callguard
        reassigned load``); per number the latest day is kept."""
        return await self.write_if_not_older(
            ((callee_key(e164), "disconnected", day.isoformat()) for e164, day in rows),
            width=0,
            tally="count:reassigned",
        )

    async def register_results(self, e164: str) -> dict[str, RegisterResult]:
        """Every scope's current result for one number (tests and tools)."""
        return await register_store.results(self.raw, e164)

    async def replace_operators(self, operators: Sequence[Operator], version: str) -> None:
        """Swap the whole certification list at once: readers see the old
        list or the new one, never a mix."""
        mapping = {op.operator_id: operator_value(op) for op in operators}
        await self._replace_hash(OPERATORS_KEY, mapping, "operators_version", version)

    async def replace_mandates(self, mandates: Sequence[Mandate], version: str) -> None:
        """Swap the whole list of mandates at once, like the operators."""
        await self._replace_hash(MANDATES_KEY, mandates_by_field(mandates), "mandates_version", version)

    async def mandates(self) -> tuple[Mandate, ...]:
        """Every mandate held (``callguard status``)."""
        raw = cast(dict[str, str], await self.redis.hgetall(MANDATES_KEY))
        return tuple(m for field, value in raw.items() for m in parse_mandates(field, value))

    async def _replace_hash(self, key: str, mapping: dict[str, str], version_field: str, version: str) -> None:
        """Stage ``mapping`` beside ``key``, then rename it over ``key`` and set
        its version in one transaction."""
        staging = staging_key(key)
        await self.redis.delete(staging)
        items = list(mapping.items())
        for start in range(0, len(items), 5000):
            await self.redis.hset(staging, mapping=dict(items[start : start + 5000]))
        async with self.redis.pipeline(transaction=True) as pipe:
            if items:
                pipe.rename(staging, key)
            else:
                pipe.delete(key)
            pipe.hset(META_KEY, version_field, version)
            await pipe.execute()

    async def upsert_consents(self, rows: Sequence[tuple[str, Consent]], chunk: int = 5000) -> None:
        """Upsert (E.164, consent) rows; the last row for a callee, client and basis wins."""
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            async with self.redis.pipeline(transaction=not self.cluster) as pipe:
                for e164, consent in part:
                    pipe.hset(callee_key(e164), f"{consent.basis}:{consent.client_id}", consent_value(consent))
                added = await pipe.execute()
            # counts for ``callguard status`` (operations): HSET answers 1 for a new field
            new = dict.fromkeys(COUNTERS.values(), 0)
            for (_, consent), fresh in zip(part, added, strict=True):
                new[COUNTERS[consent.basis]] += int(fresh)
            if any(new.values()):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name, count in new.items():
                        pipe.hincrby(META_KEY, name, count)
                    await pipe.execute()

    # --- check tokens ------------------------------------------------------------

    async def issue_token(self, grant: TokenGrant, digest: str) -> bool:
        """Store a token's grant under its hash; False when the name is taken."""
        if not await self.redis.hsetnx(TOKEN_NAMES_KEY, grant.name, digest):
            return False
        await self.redis.hset(TOKENS_KEY, digest, orjson.dumps(grant.to_json()).decode())
        await self.redis.hincrby(META_KEY, "tokens_version", 1)
        return True

    async def token_grant(self, digest: str) -> TokenGrant | None:
        raw = await self.redis.hget(TOKENS_KEY, digest)
        return None if raw is None else TokenGrant.from_json(orjson.loads(raw))

    async def tokens_version(self) -> str | None:
        """Changes with every token issued or revoked (the workers reread the grants then)."""
        return cast(str | None, await self.redis.hget(META_KEY, "tokens_version"))

    async def token_grants(self) -> dict[str, TokenGrant]:
        """Every token's grant by the token's hash."""
        raw = cast(dict[str, str], await self.redis.hgetall(TOKENS_KEY))
        return {digest: TokenGrant.from_json(orjson.loads(value)) for digest, value in raw.items()}

    async def tokens(self) -> list[tuple[TokenGrant, str | None]]:
        """Every token's grant and when it was last used (never the token)."""
        raw = cast(dict[str, str], await self.redis.hgetall(TOKENS_KEY))
        used = cast(dict[str, str], await self.redis.hgetall(TOKENS_USED_KEY))
        grants = sorted((TokenGrant.from_json(orjson.loads(v)) for v in raw.values()), key=lambda g: g.name)
        return [(grant, used.get(grant.name)) for grant in grants]

    async def revoke_token(self, name: str) -> bool:
        """Remove a token: the next request that presents it is refused."""
        digest = await self.redis.hget(TOKEN_NAMES_KEY, name)
        if digest is None:
            return False
        await self.redis.hdel(TOKENS_KEY, digest)
        await self.redis.hincrby(META_KEY, "tokens_version", 1)
        await self.redis.hdel(TOKEN_NAMES_KEY, name)
        await self.redis.hdel(TOKENS_USED_KEY, name)
        return True

    async def token_used(self, name: str, at: datetime) -> None:
        await self.redis.hset(TOKENS_USED_KEY, name, at.astimezone(UTC).isoformat(timespec="seconds"))

    async def save_audit_heads(self, heads: dict[int, tuple[int, str]]) -> None:
        """Checkpoint the audit chains' heads (partition -> offset, hash); an
        older checkpoint never replaces a newer one."""
        await self.write_if_not_older(
            ((AUDIT_HEADS_KEY, str(p), f"{offset:020d}|{digest}") for p, (offset, digest) in heads.items()), width=20
        )

    async def audit_heads(self) -> dict[int, tuple[int, str]]:
        raw = cast(dict[str, str], await self.redis.hgetall(AUDIT_HEADS_KEY))
        heads: dict[int, tuple[int, str]] = {}
        for partition, value in raw.items():
            offset, digest = value.split("|")
            heads[int(partition)] = (int(offset), digest)
        return heads

    async def add_optouts(self, rows: Iterable[tuple[str, OptOut]]) -> int:
        """Add opt-outs; for one callee and client the latest ``at`` is kept."""
        return await self.write_if_not_older(
            ((callee_key(e164), f"optout:{o.client_id}", format_when(o.at)) for e164, o in rows),
            width=0,
            tally="count:optouts",
        )
