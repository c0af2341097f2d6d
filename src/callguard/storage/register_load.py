"""Loading the register: staged bucket by bucket, made visible at once.

One load at a time, and each load is atomic as a whole:

1. take ``cg:register:lock`` (renewed while the load runs), take a new load id
   ``L`` and add it to ``cg:register:hidden``;
2. *stage*: per bucket, read it, merge the new results into the visible version
   (newest ``as_of`` wins per number and scope; the same day replaces; other
   scopes untouched) and append the result as version ``L`` (a script that
   first checks that the bucket's versions are still those the merge read);
3. *commit*: one script removes ``L`` from the hidden set, applies the census
   deltas and logs the load, and checks that the lock is still held;
4. *compact*: per bucket, drop the versions before ``L``.

A reader takes, per bucket, the last version whose id is not hidden. Until the
commit every reader sees the register as it was before the load, from the
commit on the whole new load: never half of it (one lookup script call is one
atomic snapshot of every bucket it reads). A load that fails or is killed
leaves its id hidden: its staged versions are never seen and the next load
that touches those buckets drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from callguard.storage import scripts
from callguard.storage.connection import connect, is_cluster
from callguard.storage.keys import (
    CENSUS_KEY,
    HIDDEN_KEY,
    LOADS_KEY,
    LOCK_KEY,
    META_KEY,
    NEXT_ID_KEY,
    bucket_e164,
    bucket_key,
    cover_key,
)
from callguard.storage.register_codec import (
    EPOCH,
    FIRST_AS_OF,
    LAST_AS_OF,
    SUFFIX_SPACE,
    cover_field,
    day_number,
    merge,
    version,
    versions,
    visible,
)
from callguard.storage.register_spill import (
    ROW_BUCKET,
    RegisterRows,
    pack_row,
    process_context,
    read_spilled_partition,
)

#: how long the load lock lives without renewal (seconds); renewed every third of it
LOCK_LEASE = 60.0
#: buckets read and staged per pipeline
BUCKETS_PER_ROUND = 256
#: on a Redis Cluster, seconds between a load's commit and the removal of the
#: versions it replaced: a reader reads the hidden loads, then its buckets (two
#: round trips, each bounded by CALLGUARD_REDIS_TIMEOUT; the CLI waits twice
#: its own CALLGUARD_REDIS_TIMEOUT and a second)
CLUSTER_GRACE = 3.0


class RegisterError(Exception):
    """A load that cannot proceed (lost its lock, raced another load, bad data)."""


# --- staging -------------------------------------------------------------------


@dataclass
class Staged:
    """What staging one or more partitions did."""

    rows: int = 0
    applied: int = 0  # rows whose result was written (not older than the stored one)
    census: Counter[int] = field(default_factory=Counter)  # as_of day -> delta
    keys: list[str] = field(default_factory=list)  # buckets given a staged version

    def add(self, other: Staged) -> None:
        self.rows += other.rows
        self.applied += other.applied
        self.census.update(other.census)
        self.keys += other.keys


@dataclass(frozen=True)
class LoadPlan:
    """Everything a staging process needs to know about the load."""

    directory: str
    scope: bytes
    day: int
    load_id: int
    hidden: frozenset[int]
    replace: bool = False


class _Scripts:
    """The load's scripts. redis-py refuses EVALSHA in a cluster pipeline, so
    there they are queued as plain commands, loaded on every node first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self.loaded = False
        self.stage = client.register_script(scripts.STAGE)
        self.compact = client.register_script(scripts.COMPACT)
        self.drop = client.register_script(scripts.DROP)
        self.commit = client.register_script(scripts.COMMIT)
        self.renew = client.register_script(scripts.RENEW)
        self.release = client.register_script(scripts.RELEASE)

    async def queue(self, pipe: Any, script: Any, key: str, *args: Any) -> None:
        """Add one call of ``script`` on ``key`` to ``pipe``."""
        if not self.cluster:
            await script(keys=[key], args=list(args), client=pipe)
            return
        if not self.loaded:
            for each in (self.stage, self.compact, self.drop):
                await self.client.script_load(each.script)  # on every primary
            self.loaded = True
        pipe.execute_command("EVALSHA", script.sha, 1, key, *args)


async def stage_partition(
    client: Any,
    plan: LoadPlan,
    part: int,
    progress: Callable[[int], None] | None = None,
    scripts: _Scripts | None = None,
) -> Staged:
    """Merge one partition's rows into their buckets and stage the results as
    version ``plan.load_id`` (``client`` must not decode responses)."""
    scripts = scripts or _Scripts(client)
    rows = read_spilled_partition(Path(plan.directory), part)
    result = Staged(rows=len(rows))
    multiple: Counter[int] | None = None
    if len(set(map((16).__rrshift__, rows))) < len(rows):  # a number twice: its last row wins, as the file reads
        numbers = list(map((16).__rrshift__, rows))
        multiple = Counter(numbers)
        rows = [pack_row(n, p) for n, p in dict(zip(numbers, map((0xFFFF).__and__, rows), strict=True)).items()]
        del numbers
    rows.sort()
    groups: list[tuple[int, list[int], list[int]]] = []
    i, total = 0, len(rows)
    while i < total:
        bucket = rows[i] // ROW_BUCKET
        j = bisect_left(rows, (bucket + 1) * ROW_BUCKET, i)
        chunk = rows[i:j]
        suffixes = list(map((bucket * SUFFIX_SPACE).__rsub__, map((16).__rrshift__, chunk)))
        groups.append((bucket, suffixes, list(map((0xFFFF).__and__, chunk))))
        i = j
    del rows
    result.applied = result.rows
    for start in range(0, len(groups), BUCKETS_PER_ROUND):
        batch = groups[start : start + BUCKETS_PER_ROUND]
        keys = [bucket_key(bucket) for bucket, _, _ in batch]
        olds: list[Any] = await (client.mget_nonatomic(keys) if scripts.cluster else client.mget(keys))
        async with client.pipeline(transaction=False) as pipe:
            staged: list[str] = []
            sent = sum(len(suffixes) for _, suffixes, _ in batch)
            for key, (bucket, suffixes, payloads), old in zip(keys, batch, olds, strict=True):
                seen = versions(old)
                base = visible(old, plan.hidden)
                body, skipped, census = merge(
                    base[1] if base else None, plan.scope, plan.day, suffixes, payloads, plan.replace
                )
                if skipped:
                    result.applied -= (
                        len(skipped) if multiple is None else sum(multiple[bucket * SUFFIX_SPACE + s] for s in skipped)
                    )
                if body is None:
                    continue
                result.census.update(census)
                expected = ",".join(str(load_id) for load_id, _, _ in seen)
                await scripts.queue(
                    pipe, scripts.stage, key, expected, base[0] if base else 0, version(plan.load_id, (body,))
                )
                staged.append(key)
            answers = await pipe.execute() if staged else []
        if not all(int(a) == 1 for a in answers):
            result.keys += [k for k, a in zip(staged, answers, strict=True) if int(a) == 1]
            raise RegisterError("another register load changed the register meanwhile; this load was not applied")
        result.keys += staged
        if progress is not None:
            progress(sent)
    return result


# --- processes -------------------------------------------------------------------

_shared_counter: Any = None


def _init_process(counter: Any) -> None:
    global _shared_counter
    _shared_counter = counter


def _count(rows: int) -> None:
    if _shared_counter is not None:
        with _shared_counter.get_lock():
            _shared_counter.value += rows


def _stage_in_process(url: str, plan: LoadPlan, part: int) -> Staged:
    async def run() -> Staged:
        client = connect(url, timeout=30, decode_responses=False)
        try:
            return await stage_partition(client, plan, part, _count)
        finally:
            await client.aclose()

    return asyncio.run(run())


# --- the load ----------------------------------------------------------------------


@dataclass
class LoadResult:
    rows: int
    applied: int
    load_id: int
    #: a named register's load: the coverage fields it set (``+1NPA`` or ``*``)
    covered: tuple[str, ...] = ()


@dataclass(frozen=True)
class Coverage:
    """What a named register's load covers, committed with it: every number
    (``everything``) or the coverage units of its rows (:func:`cover_field`)
    and any declared ``units``; ``generation`` is the segments' day field,
    ``record`` the load's log line (kept in the coverage hash)."""

    name: str
    generation: int
    as_of: date
    everything: bool = False
    units: frozenset[str] = frozenset()
    record: str = ""

    def fields(self, keys: Iterable[str]) -> dict[str, str]:
        value = f"{self.generation}|{self.as_of.isoformat()}"
        units = {"*"} if self.everything else set(self.units) | {cover_field(bucket_e164(k)) for k in keys}
        fields = dict.fromkeys(sorted(units), value)
        if self.record:
            fields["#last_load"] = self.record
        return fields


async def load(
    client: Any,
    rows: RegisterRows,
    as_of: date,
    client_id: str,
    *,
    entry: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    url: str | None = None,
    workers: int = 1,
    wait_lock: float = 600.0,
    waiting: Callable[[], None] | None = None,
    grace: float | None = None,
    fail_after_staging: Callable[[], Awaitable[None]] | None = None,
    replace: bool = False,
    meta: dict[str, str] | None = None,
    coverage: Coverage | None = None,
) -> LoadResult:
    """Apply one consultation's results (``rows``) atomically (see the module
    docstring). ``client`` must not decode responses. With ``url`` and
    ``workers`` > 1 the partitions are merged by that many processes.
    ``entry``, when given, is logged in ``cg:register:loads`` by the commit
    (with ``applied`` filled in). ``waiting`` is called once when another load
    holds the lock (this one then waits up to ``wait_lock`` seconds). On a Redis Cluster the replaced versions are
    removed ``grace`` seconds after the commit (default :data:`CLUSTER_GRACE`).
    ``fail_after_staging`` is a test hook. With ``replace`` the load
    replaces every entry of its scope in the buckets it touches and keeps no
    census (a directory extract); ``meta`` fields are set in ``cg:meta`` by
    the commit, with the visibility switch, and so are a named register's
    ``coverage`` fields in its coverage hash.
    """
    if not FIRST_AS_OF <= as_of <= LAST_AS_OF:
        raise RegisterError(f"as_of must be between {FIRST_AS_OF} and {LAST_AS_OF}")
    scripts = _Scripts(client)
    token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    lease_ms = int(LOCK_LEASE * 1000)
    waited = time.monotonic()
    while not await client.set(LOCK_KEY, token, nx=True, px=lease_ms):
        if waiting is not None:  # once
            waiting()
            waiting = None
        if time.monotonic() - waited > wait_lock:
            holder = await client.get(LOCK_KEY)
            raise RegisterError(f"another register load is running ({holder!r}); try again later")
        await asyncio.sleep(0.2)

    async def renew() -> None:
        while True:
            await asyncio.sleep(LOCK_LEASE / 3)
            await scripts.renew(keys=[LOCK_KEY], args=[token, lease_ms])

    renewal = asyncio.create_task(renew())
    load_id = int(await client.incr(NEXT_ID_KEY))
    staged = Staged()
    committed = False
    try:
        await client.sadd(HIDDEN_KEY, load_id)
        hidden = frozenset(int(x) for x in await client.smembers(HIDDEN_KEY))
        plan = LoadPlan(str(rows.directory), client_id.encode(), day_number(as_of), load_id, hidden, replace)
        parts = [p for p in range(rows.partitions) if any(rows.directory.glob(f"{p:04d}-*"))]
        written = 0

        def tick(count: int) -> None:
            nonlocal written
            written += count
            if progress is not None:
                progress(written)

        if workers > 1 and url is not None and len(parts) > 1:
            await _stage_with_processes(url, plan, parts, workers, progress, staged)
        else:
            for part in parts:
                staged.add(await stage_partition(client, plan, part, tick, scripts))
        if fail_after_staging is not None:
            await fail_after_staging()
        record = ""
        if entry is not None:
            record = orjson.dumps({**entry, "applied": staged.applied}).decode()
        fields = sorted((meta or {}).items())
        args: list[Any] = [token, load_id, client_id, record, len(fields)]
        for name, value in fields:
            args += (name, value)
        covered = {} if coverage is None else coverage.fields(staged.keys)
        args += (len(covered), "1" if coverage is not None and coverage.everything else "0")
        for name, value in covered.items():
            args += (name, value)
        for day, delta in sorted(staged.census.items()):
            if delta and not replace:
                args += ((EPOCH + timedelta(days=day)).isoformat(), delta)
        keys = [LOCK_KEY, HIDDEN_KEY, CENSUS_KEY, LOADS_KEY, META_KEY]
        if coverage is not None:
            keys.append(cover_key(coverage.name))
        if scripts.cluster:
            await _commit_in_steps(client, args, keys)
            committed = True
            # a reader read the hidden loads before its buckets: give the
            # readers that still count this load as hidden time to finish
            await asyncio.sleep(CLUSTER_GRACE if grace is None else grace)
            if coverage is not None:
                await _settle_coverage(client, keys[5], covered)
        else:
            await scripts.commit(keys=keys, args=args)
            committed = True
        for start in range(0, len(staged.keys), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for key in staged.keys[start : start + 1000]:
                    await scripts.queue(pipe, scripts.compact, key, load_id)
                await pipe.execute()
    except BaseException:
        if not committed:  # best effort: the id stays hidden, so leftovers are never seen anyway
            with contextlib.suppress(Exception):
                for start in range(0, len(staged.keys), 1000):
                    async with client.pipeline(transaction=False) as pipe:
                        for key in staged.keys[start : start + 1000]:
                            await scripts.queue(pipe, scripts.drop, key, load_id)
                        await pipe.execute()
        raise
    finally:
        renewal.cancel()
        with contextlib.suppress(BaseException):
            await renewal
        with contextlib.suppress(Exception):
            await scripts.release(keys=[LOCK_KEY], args=[token])
    covered_units = tuple(k for k in (coverage.fields(staged.keys) if coverage else {}) if not k.startswith("#"))
    return LoadResult(staged.rows, staged.applied, load_id, covered_units)


async def _commit_in_steps(client: Any, args: list[Any], keys: list[str]) -> None:
    """The commit on a Redis Cluster, where its keys live on several nodes: the
    visibility switch (SREM from the hidden set) is still one command, the
    census and the log follow it. A named register's coverage first accepts
    both generations (``{old}|{old as_of}|{new}``), so that a reader listed a
    number whichever version of its bucket it read; :func:`_settle_coverage`
    keeps the new one alone once the readers of the old versions are done."""
    token, load_id, scope, record, fields, *rest = args
    meta, rest = rest[: 2 * fields], rest[2 * fields :]
    count, wipe, *rest = rest
    cover, deltas = rest[: 2 * count], rest[2 * count :]
    if await client.get(LOCK_KEY) != token.encode():
        raise RegisterError("the register load lock was lost")
    if count:
        old = {k.decode(): v.decode() for k, v in (await client.hgetall(keys[5])).items()}
        new = {name: value for name, value in zip(cover[::2], cover[1::2], strict=True) if not name.startswith("#")}
        generation = next(iter(new.values())).partition("|")[0] if new else ""
        # every unit whose readers may meet the new entries: the load's own, and under a
        # load of every number every unit held so far (each shadows '*' until settled)
        units = set(new) | ({k for k in old if not k.startswith("#")} if wipe == "1" else set())
        for name in sorted(units):
            previous = old.get(name) or (None if wipe == "1" else old.get("*"))
            if previous is not None:
                was = previous.split("|")
                await client.hset(keys[5], name, f"{was[0]}|{was[1]}|{generation}")
    await client.srem(HIDDEN_KEY, load_id)
    # a reader between the two sees the new entries with the old generation, or
    # none of the directory: "not listed" either way, never a wrong "listed"
    for name, value in zip(meta[::2], meta[1::2], strict=True):
        await client.hset(META_KEY, name, value)
    for day, delta in zip(deltas[::2], deltas[1::2], strict=True):
        field = f"{scope}|{day}"
        if await client.hincrby(CENSUS_KEY, field, delta) <= 0:
            await client.hdel(CENSUS_KEY, field)
    if record:
        await client.lpush(LOADS_KEY, record)
        await client.ltrim(LOADS_KEY, 0, 999)
        await client.hset(META_KEY, "register_last_load", record)


async def _settle_coverage(client: Any, key: str, covered: dict[str, str]) -> None:
    """A cluster commit's last step: the new generation alone (and, for a load
    of every number, no other coverage unit)."""
    if "*" in covered:  # (HGETALL: the loaders' Redis user has no HKEYS)
        stale = [f for f in await client.hgetall(key) if not f.startswith(b"#") and f != b"*"]
        if stale:
            await client.hdel(key, *stale)
    for name, value in covered.items():
        await client.hset(key, name, value)


async def _stage_with_processes(
    url: str, plan: LoadPlan, parts: list[int], workers: int, progress: Callable[[int], None] | None, total: Staged
) -> None:
    """Stage ``parts`` in ``workers`` processes, adding what they staged to
    ``total`` (also when one fails: the load then drops what was staged)."""
    context = process_context()
    counter = context.Value("q", 0)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process, initargs=(counter,)) as pool:
        futures = [loop.run_in_executor(pool, _stage_in_process, url, plan, part) for part in parts]
        pending = set(futures)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=1.0, return_when=asyncio.FIRST_EXCEPTION)
                if progress is not None:
                    progress(int(counter.value))
                for future in done:
                    if future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
        finally:
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    total.add(future.result())
                else:
                    future.cancel()
