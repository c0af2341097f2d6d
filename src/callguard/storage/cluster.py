"""The stores on a Redis Cluster, through redis-py's ``RedisCluster`` client.

``CALLGUARD_REDIS_URL=redis+cluster://HOST:PORT[,HOST:PORT…]`` (or
``rediss+cluster://`` for TLS; user and password as in ``redis://``) selects
it; any node will do, the client asks for the slot map and follows it.

The key layout is the same as on one Redis. What changes is how the scripts
are called: a script may touch the keys of one slot only, so

- a batch's lookups become one pipeline per round trip, grouped by node by the
  client: per intent one register script on its bucket and one ``HMGET`` of
  its callee hash; the operators list is cached in process and read again only
  when ``operators_version`` changes, and the register's hidden loads are read
  with that version, in a first round trip (so a lookup costs two);
- recording allowed intents: the frequency-cap script runs on the callee hash,
  then the intent is remembered on its own key. A crash between the two
  counts the call but has not remembered the intent yet; the batch was not
  acknowledged, so its intents come again, the cap script finds the call
  already recorded (by its ``intent_ref``) and the intent is remembered then;
- outcomes: three steps, safe to redo. The intent key is claimed by a script
  (``pending``), the campaign counter and the callee's silent-call block are
  written, then the outcome is marked applied. A crash before the mark leaves
  the claim pending, and the redelivered report (same outcome) applies it
  again: the silent-call block is never lost, the counter may count the
  report twice (over-counting the abandoned rate errs on the safe side);
- register loads stage and compact bucket by bucket as on one Redis; the
  commit is a few commands instead of one script (the visibility switch is
  still one command, ``SREM`` from the hidden set), and the versions a load
  replaced are removed only :data:`callguard.storage.register_load.CLUSTER_GRACE` seconds
  after it, because a reader reads the hidden loads and its buckets in two
  round trips;
- the certification list is staged under a key in the list's own slot
  (``{cg:operators}:staging``) so that ``RENAME`` stays atomic.

With ``CALLGUARD_REDIS_CLUSTER_READS=replicas`` the second round trip of a
lookup goes to each slot's replicas (a second client, ``EVALSHA_RO`` for the
register script) while every replica reports its link to its primary up;
the first stays on the primaries, so the load state a lookup reads is never
older than the buckets it reads with it.

The per-key Lua of both is the same text (:mod:`callguard.storage.scripts`):
the single node's scripts loop over a batch, these run one key a call.
``tests/storage/test_cluster.py`` runs the same data and calls through both and
compares what they answer and store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from callguard.core.facts import PastCall, RegisterResult, intent_ref
from callguard.core.schema import OutcomeReport
from callguard.storage import register as register_store
from callguard.storage.connection import connect
from callguard.storage.keys import (
    CALLEE_FIELDS,
    MANDATES_KEY,
    META_KEY,
    OPERATORS_KEY,
    callee_key,
    intent_key,
    outcome_days_key,
    staging_key,
)
from callguard.storage.scripts import (
    BLOCK_SILENT,
    CLAIM_OUTCOME,
    FINISH_OUTCOME,
    LOOKUP_ONE,
    RECORD_CALLS,
    REMEMBER,
    WRITE_ONE,
)
from callguard.storage.stores import (
    NO_CAMPAIGN,
    OUTCOME_COUNTERS_LIFETIME,
    OUTCOME_MEMORY,
    Allowed,
    LookupUnavailable,
    StaleReplica,
    Stores,
    cap_arguments,
    epoch_ms,
    format_when,
    parse_calls,
)

_SCRIPTS = {
    "register_one": LOOKUP_ONE,
    "record_calls": RECORD_CALLS,
    "remember": REMEMBER,
    "claim_outcome": CLAIM_OUTCOME,
    "finish_outcome": FINISH_OUTCOME,
    "block_silent": BLOCK_SILENT,
    "write_one": WRITE_ONE,
}


class ClusterStores(Stores):
    """:class:`~callguard.storage.stores.Stores` on a Redis Cluster (see the module docstring)."""

    cluster = True

    def __init__(
        self, client: RedisCluster, url: str, timeout: float = 1.0, replicas: RedisCluster | None = None
    ) -> None:
        super().__init__(cast(Any, client), url, cast(Any, replicas), timeout)
        self._sha = {name: client.register_script(text).sha for name, text in _SCRIPTS.items()}
        self._loaded: set[int] = set()  # ids of the clients whose nodes hold the scripts
        self._operators: dict[str, str] = {}
        self._operators_version: object = self  # no version read yet
        self._mandates: dict[str, str] = {}
        self._mandates_version: object = self
        self._replicas_versioned = False  # every replica's Redis version was checked

    @property
    def raw(self) -> Any:
        if self._raw is None:
            self._raw = connect(self.url, max(self.timeout, 10.0), decode_responses=False)
        return self._raw

    async def _pipeline(self, commands: Sequence[Sequence[Any]], client: Any = None) -> list[Any]:
        """Run ``commands`` in one cluster pipeline (redis-py sends each node its
        share), loading the scripts first and again after a NOSCRIPT (a node
        restarted, was flushed or was promoted). ``client``: the replicas'
        client (lookups only), else the primaries'."""
        client = self.redis if client is None else client
        for attempt in (1, 2):
            if id(client) not in self._loaded:
                await self._load_scripts(client)
                self._loaded.add(id(client))
            try:
                async with client.pipeline() as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    return cast(list[Any], await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                self._loaded.discard(id(client))
        raise AssertionError("unreachable")

    async def _load_scripts(self, client: Any) -> None:
        if client is self.redis:
            for text in _SCRIPTS.values():
                await client.script_load(text)  # on every primary
            return
        # the lookup script on every replica: Redis 7 does not replicate SCRIPT LOAD
        await client.initialize()
        await asyncio.gather(*(node.execute_command("SCRIPT", "LOAD", LOOKUP_ONE) for node in client.get_replicas()))

    def _script(self, name: str, key: str, *args: Any) -> tuple[Any, ...]:
        """A script call as a pipeline command (redis-py refuses ``evalsha`` in
        a cluster pipeline, not the command)."""
        return ("EVALSHA", self._sha[name], 1, key, *args)

    # --- reads ---------------------------------------------------------------

    async def _lookup_replies(self, keys: list[str], args: list[str]) -> list[Any]:
        """The reply the single node's lookup script gives, built from single-slot commands."""
        count = int(args[0])
        operator_ids = args[1 : count + 1]
        npairs = int(args[count + 1])
        pairs = args[count + 2 : count + 2 + npairs]
        b = count + 2 + npairs
        days, nfields = int(args[b]), int(args[b + 1])
        fields = args[b + 2 : b + 2 + nfields]
        first: list[Sequence[Any]] = [
            ("HMGET", META_KEY, "operators_version", "directory_generation", "directory_as_of", "mandates_version"),
            ("SMEMBERS", keys[3]),
        ]
        if nfields:
            first += [("HMGET", keys[4 + d], *fields) for d in range(days)]
        a = b + 2 + nfields
        nr, np = int(args[a]), int(args[a + 1])
        units = args[a + 2 : a + 2 + np]
        first += [("HMGET", keys[4 + days + r], *units) for r in range(nr)]
        meta, hidden, *rest = await self._pipeline(first)
        counts, cover = (rest[:days], rest[days:]) if nfields else ([], rest)
        # each list is read after its version: a list newer than its version is read again next time
        if meta[0] != self._operators_version:
            self._operators = cast(dict[str, str], await self.redis.hgetall(OPERATORS_KEY))
            self._operators_version = meta[0]
        if meta[3] != self._mandates_version:
            self._mandates = cast(dict[str, str], await self.redis.hgetall(MANDATES_KEY))
            self._mandates_version = meta[3]
        hidden_ids = sorted(hidden)
        commands: list[Sequence[Any]] = []
        a += 2 + np
        for i in range(4 + days + nr, len(keys), 2):
            suffix, client = args[a], args[a + 1]
            a += 2
            commands.append(self._script("register_one", keys[i], suffix, client, *hidden_ids))
            commands.append(("HMGET", keys[i + 1], *(field.format(c=client) for field in CALLEE_FIELDS)))
        replies = await self._read(lambda client: self._on(client, commands)) if commands else []
        operators = [self._operators.get(op_id) for op_id in operator_ids]
        return [operators, meta, counts, [self._mandates.get(pair) for pair in pairs], cover, *replies]

    async def _on(self, client: Any, commands: list[Sequence[Any]]) -> list[Any]:
        """``commands`` through ``client``; on the replicas' client the register
        script runs as ``EVALSHA_RO``, which redis-py sends to a replica (a
        plain ``EVALSHA`` may write, so it goes to the primary)."""
        if client is not self.redis:
            commands = [("EVALSHA_RO", *command[1:]) if command[0] == "EVALSHA" else command for command in commands]
        return await self._pipeline(commands, client)

    async def _replica_roles(self) -> list[Any]:
        """The ``ROLE`` reply of every replica of the cluster, once each runs
        Redis 7 or newer (``EVALSHA_RO``, checked at the first call). A
        cluster without replicas raises, so that ``/ready`` does not claim
        replica reads that are not happening."""
        client = cast(Any, self.replica)
        await client.initialize()
        nodes = client.get_replicas()
        if not nodes:
            raise StaleReplica("the cluster has no replicas")
        if not self._replicas_versioned:
            infos = await asyncio.gather(*(node.execute_command("INFO", "server") for node in nodes))
            for info in infos:
                version = str(info.get("redis_version", "0"))
                if int(version.split(".")[0]) < 7:
                    raise StaleReplica(
                        f"replica reads on a cluster need Redis 7 or newer (EVALSHA_RO); a node runs {version}"
                    )
            self._replicas_versioned = True
        return list(await asyncio.gather(*(node.execute_command("ROLE") for node in nodes)))

    async def register_results(self, e164: str) -> dict[str, RegisterResult]:
        return await register_store.results(self.raw, e164)

    # --- writes ----------------------------------------------------------------

    async def record_allowed(
        self, allowed: Sequence[Allowed], now: datetime, limits: Sequence[tuple[timedelta, int]] = ()
    ) -> list[tuple[PastCall, ...] | None]:
        if not allowed:
            return []
        stamp = str(epoch_ms(now))
        memory = int(OUTCOME_MEMORY.total_seconds())
        capped = [i for i, item in enumerate(allowed) if item.capped]
        results: list[Any] = [1] * len(allowed)
        try:
            calls = [
                self._script("record_calls", callee_key(allowed[i].callee), *cap_arguments(allowed[i], limits),
                             allowed[i].client_id, intent_ref(allowed[i].intent_id), stamp)
                for i in capped
            ]  # fmt: skip
            for i, answer in zip(capped, await self._pipeline(calls) if calls else [], strict=True):
                results[i] = answer
            remember = [
                self._script("remember", intent_key(item.intent_id), item.callee, item.client_id,
                             item.campaign_id or NO_CAMPAIGN, memory)
                for item, result in zip(allowed, results, strict=True)
                if result == 1
            ]  # fmt: skip
            if remember:
                await self._pipeline(remember)
        except (RedisError, OSError, TimeoutError) as exc:
            raise LookupUnavailable(type(exc).__name__) from exc
        return [None if result == 1 else parse_calls(result) for result in results]

    async def apply_outcomes(self, outcomes: Sequence[tuple[OutcomeReport, bool]], tz: tzinfo) -> list[str | int]:
        """As on one Redis, in three steps (see the module docstring). A report
        of an intent already reported earlier in the batch is answered as the
        single script answers it (-1, or 0 when the intent is unknown)
        without a claim: a pending claim would let it apply twice."""
        if not outcomes:
            return []
        first: dict[str, int] = {}
        for i, (report, _) in enumerate(outcomes):
            first.setdefault(report.intent_id, i)
        claimed = await self._pipeline(
            [
                self._script("claim_outcome", intent_key(report.intent_id), report.outcome.value)
                for i, (report, _) in enumerate(outcomes)
                if first[report.intent_id] == i
            ]
        )
        answer = dict(zip(first.values(), claimed, strict=True))
        claims: list[Any] = []
        for i, (report, _) in enumerate(outcomes):
            earlier = first[report.intent_id]
            claims.append(answer[i] if earlier == i else (0 if answer[earlier] == 0 else -1))
        lifetime = int(OUTCOME_COUNTERS_LIFETIME.total_seconds())
        commands: list[Sequence[Any]] = []
        finish: list[Sequence[Any]] = []
        for (report, silent), claim in zip(outcomes, claims, strict=True):
            if not isinstance(claim, list):
                continue
            callee, client, campaign = claim
            counters = outcome_days_key(report.at.astimezone(tz).date())
            commands += [("HINCRBY", counters, f"{campaign}|{report.outcome.value}", 1), ("EXPIRE", counters, lifetime)]
            if silent:
                commands.append(
                    self._script("block_silent", callee_key(callee), f"silent:{client}", format_when(report.at))
                )
            finish.append(self._script("finish_outcome", intent_key(report.intent_id), report.outcome.value))
        if commands:
            await self._pipeline(commands)
            await self._pipeline(finish)  # only once the counter and the block are written
        return [claim[2] if isinstance(claim, list) else int(claim) for claim in claims]

    async def write_if_not_older(
        self,
        triples: Iterable[tuple[str, str, str]],
        width: int,
        chunk: int = 1000,
        tally: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> int:
        written = added = 0
        pending: dict[str, list[str]] = {}

        async def flush() -> None:
            nonlocal written, added
            answers = await self._pipeline(
                [self._script("write_one", key, width, *pairs) for key, pairs in pending.items()]
            )
            written += sum(int(w) for w, _ in answers)
            added += sum(int(a) for _, a in answers)
            pending.clear()

        for sent, (key, field, value) in enumerate(triples, 1):
            pending.setdefault(key, []).extend((field, value))
            if sent % chunk == 0:
                await flush()
                if progress is not None:
                    progress(sent)
        if pending:
            await flush()
        if tally and added:
            await self.redis.hincrby(META_KEY, tally.removeprefix("count:"), added)
        return written

    async def _replace_hash(self, key: str, mapping: dict[str, str], version_field: str, version: str) -> None:
        """As on one Redis; the staging key shares the list's slot, so ``RENAME``
        is still atomic, and the version follows it (readers that see the new
        version read the new list)."""
        staging = staging_key(key, cluster=True)
        await self.redis.delete(staging)
        items = list(mapping.items())
        for start in range(0, len(items), 5000):
            await self.redis.hset(staging, mapping=dict(items[start : start + 5000]))
        if items:
            await self.redis.rename(staging, key)
        else:
            await self.redis.delete(key)
        await self.redis.hset(META_KEY, version_field, version)
