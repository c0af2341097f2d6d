"""The opposition register in Redis: compact buckets, atomic loads, batched lookups.

Layout
======

A number's register results live in the bucket of its E.164 form without the
last four digits: one Redis string per 10 000 consecutive numbers::

    cg:reg:{+39348123}      string  the results of +39 348 123 0000 … 9999, every scope
    cg:register:hidden      set     ids of loads staged but not committed: readers skip them
    cg:register:next        string  the last load id handed out (INCR)
    cg:register:lock        string  the running load's token (SET NX PX, renewed): one load at a time
    cg:register:census      hash    "{scope}|{as_of}" -> numbers whose current result is that one
    cg:register:loads       list    one JSON line per register load (newest first)

The hash tag (the part in braces) is the bucket prefix itself, so the layout
works unchanged on Redis Cluster: every read or write of a number's results
touches exactly one key and one slot, and a batch's lookups can be grouped per
node by slot. (A coarser tag, e.g. ``{+39348}``, would put 100 buckets in one
slot for no gain: nothing ever needs two buckets atomically.)

A bucket's value is a sequence of *versions*; each version is a whole state of
the bucket. All integers are little-endian::

    value    := version+                 one; two while a load is staged
    version  := id u32 | size u32 | segment*        (size: bytes of the segments)
    segment  := scope_len u16 | scope | as_of u16 | n u16 | format u8 | body
    body (format 0: small segments) := suffix u16 × n | payload u16 × n
    body (format 1: the others)     := base u16 | bits u8 | start u16 × 40 | low u8 × n | code (bits) × n
    payload  := opposed << 15 | registered_at code (0 unknown, else days since 1970-01-01 + 1)
    code     := opposed | (0 if registered_at unknown, else its code - base + 1) << 1

A segment holds the results of one scope (``*`` or a client id) and one
consultation day (``as_of``, days since 1970-01-01), sorted by suffix (the last
four digits). Format 1 splits a suffix into its high part (``suffix // 256``,
0..39) and its low byte: ``start[h]`` is the position of the first entry with
high part ``h``; a lookup binary-searches the low bytes of its high part.
The payloads are packed in ``bits`` bits each (little-endian bit order),
registration days relative to the segment's earliest (``base``): a register
whose registrations span 1 300 days costs 1 + 11 bits a number, so an entry
is 2.5 bytes. Each segment takes the smaller format. Per number and scope
there is at most one entry in a version: a load applies "the most recent
consultation wins" when it writes, readers never merge.

Measured (``./dev bench register``) 3.4 bytes of Redis memory per
number at Italy's density (``used_memory`` deltas, key overhead included),
against 43 bytes with the previous one-hash-field-per-number layout (same rows, same run).

Loading (one load at a time, whole-load atomic)
===============================================

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
import shutil
import socket
import struct
import sys
import tempfile
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from operator import or_
from pathlib import Path
from typing import Any

import orjson
import redis

from callguard.core.facts import RegisterResult
from callguard.core.schema import ALL_CLIENTS
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
    register_key,
)

#: The scope under which the public-directory extract lives in the register's
#: buckets (``callguard directory load``): the same encoding, so the same bytes
#: a number, read by the same GET as the number's register results. Its
#: segment's day field holds the extract's *generation* (``cg:meta``
#: ``directory_generation``), not a day: a number is listed only when its
#: entry belongs to the generation in use, so a load replaces the whole set.
#: Never a client's scope: the lookup tests for it first, and loads refuse it.
DIRECTORY_SCOPE = "#directory"
#: Generations count 1..65535 and then wrap (the day field is 16 bits).
MAX_GENERATION = 0xFFFF
#: Named registers (``callguard register load --register NAME``, e.g. the US
#: National Do Not Call Registry ``us-dnc``) live in the buckets under the
#: scope ``@NAME``, their segments' day field holding a *generation* as the
#: directory's does. Which generation (and as-of day) is in use is kept per
#: area code, or for every number, in ``cg:register:cover:{NAME}``: field
#: ``+1NPA`` (or ``*``) -> ``"{generation}|{as_of}"`` (``"{generation}|{as_of}|{previous}"``
#: while a load commits on a Redis Cluster, when both generations count), and
#: ``#generation`` the last one handed out. A load replaces the register's
#: entries for the area codes it covers: a number absent from the new list
#: is no longer listed there. Loads refuse client ids starting with ``@``.
NAMED_PREFIX = "@"


def cover_field(e164: str) -> str:
    """The coverage unit of a number: its NANP area code (``+1212``), else its country code."""
    if e164.startswith("+1"):
        return e164[:5]
    from callguard.core.numbers import calling_code

    code = calling_code(e164[:4])
    return e164[:4] if code is None else f"+{code}"


SUFFIX_SPACE = 10_000  # 10 ** SUFFIX_DIGITS
HIGH_PARTS = (SUFFIX_SPACE + 255) // 256  # 40
INDEX_BYTES = 2 * HIGH_PARTS
PLAIN, INDEXED = 0, 1

EPOCH = date(1970, 1, 1)
OPPOSED = 0x8000
#: registered_at is stored in 15 bits: days since 1970-01-01 plus one (0: unknown)
FIRST_REGISTERED = EPOCH
LAST_REGISTERED = EPOCH + timedelta(days=0x7FFF - 1)
#: as_of is stored in 16 bits: days since 1970-01-01
FIRST_AS_OF = EPOCH
LAST_AS_OF = EPOCH + timedelta(days=0xFFFF)

#: how long the load lock lives without renewal (seconds); renewed every third of it
LOCK_LEASE = 60.0
#: buckets read and staged per pipeline
BUCKETS_PER_ROUND = 256
#: on a Redis Cluster, seconds between a load's commit and the removal of the
#: versions it replaced: a reader reads the hidden loads, then its buckets (two
#: round trips, each bounded by CALLGUARD_REDIS_TIMEOUT; the CLI waits twice
#: its own CALLGUARD_REDIS_TIMEOUT and a second)
CLUSTER_GRACE = 3.0

_LITTLE = sys.byteorder == "little"
_HEAD = struct.Struct("<II")
_SEGMENT_TAIL = struct.Struct("<HHB")


class RegisterError(Exception):
    """A load that cannot proceed (lost its lock, raced another load, bad data)."""


# --- numbers, days and payloads ----------------------------------------------


def e164_number(e164: str) -> int:
    """``+393481234567`` as the integer 393481234567."""
    return int(e164[1:])


def day_number(day: date) -> int:
    return (day - EPOCH).days


def registered_code(registered_at: date | None) -> int:
    if registered_at is None:
        return 0
    if not FIRST_REGISTERED <= registered_at <= LAST_REGISTERED:
        raise ValueError(f"registered_at must be between {FIRST_REGISTERED} and {LAST_REGISTERED}")
    return (registered_at - EPOCH).days + 1


def payload(opposed: bool, registered_at: date | None) -> int:
    return (OPPOSED if opposed else 0) | registered_code(registered_at)


@lru_cache(maxsize=65_536)
def register_result(value: int, client_id: str) -> RegisterResult:
    """A lookup's answer for one scope (``as_of`` day << 16 | payload) as a result."""
    day, bits = divmod(value, 0x10000)
    code = bits & 0x7FFF
    return RegisterResult(
        opposed=bool(bits & OPPOSED),
        as_of=EPOCH + timedelta(days=day),
        registered_at=EPOCH + timedelta(days=code - 1) if code else None,
        client_id=client_id,
    )


# --- encoding ----------------------------------------------------------------


def _u16(values: Iterable[int]) -> bytes:
    a = array("H", values)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        a.byteswap()
    return a.tobytes()


def _from_u16(data: bytes) -> list[int]:
    a = array("H")
    a.frombytes(data)
    if not _LITTLE:  # pragma: no cover
        a.byteswap()
    return a.tolist()


def _pack(codes: Sequence[int], bits: int) -> bytes:
    acc = 0
    for code in reversed(codes):
        acc = (acc << bits) | code
    return acc.to_bytes((len(codes) * bits + 7) // 8, "little")


def _unpack(data: bytes, n: int, bits: int) -> list[int]:
    acc = int.from_bytes(data, "little")
    mask = (1 << bits) - 1
    out: list[int] = []
    for _ in range(n):
        out.append(acc & mask)
        acc >>= bits
    return out


def _packed_size(n: int, bits: int) -> int:
    return 3 + INDEX_BYTES + n + (n * bits + 7) // 8


def encode_segment(scope: bytes, day: int, suffixes: Sequence[int], payloads: Sequence[int]) -> bytes:
    """One segment; ``suffixes`` sorted and distinct, ``payloads`` alongside."""
    n = len(suffixes)
    head = struct.pack("<H", len(scope)) + scope
    distinct = set(payloads)
    dated = [p & 0x7FFF for p in distinct if p & 0x7FFF]
    base = min(dated, default=1)
    bits = 1 + (max(dated, default=base) - base + 1).bit_length() if dated else 1
    if 4 * n <= _packed_size(n, bits):
        return head + _SEGMENT_TAIL.pack(day, n, PLAIN) + _u16(suffixes) + _u16(payloads)
    code = {p: p >> 15 | ((p & 0x7FFF) - base + 1 if p & 0x7FFF else 0) << 1 for p in distinct}
    starts = [bisect_left(suffixes, high << 8) for high in range(HIGH_PARTS)]
    return b"".join(
        (
            head,
            _SEGMENT_TAIL.pack(day, n, INDEXED),
            struct.pack("<HB", base, bits),
            _u16(starts),
            bytes(map((255).__and__, suffixes)),
            _pack(list(map(code.__getitem__, payloads)), bits),
        )
    )


@dataclass(slots=True)
class Segment:
    """One decoded segment header; ``raw`` is the whole segment."""

    scope: bytes
    day: int
    n: int
    format: int
    raw: bytes
    body: int  # offset of the body in raw

    def entries(self) -> tuple[list[int], list[int]]:
        """(suffixes, payloads), sorted by suffix."""
        return self.suffixes(), self.payloads()

    def suffixes(self) -> list[int]:
        raw, body, n = self.raw, self.body, self.n
        if self.format == PLAIN:
            return _from_u16(raw[body : body + 2 * n])
        body += 3
        starts = [*_from_u16(raw[body : body + INDEX_BYTES]), n]
        lows = raw[body + INDEX_BYTES : body + INDEX_BYTES + n]
        suffixes: list[int] = []
        for high in range(HIGH_PARTS):
            suffixes += map((high << 8).__add__, lows[starts[high] : starts[high + 1]])
        return suffixes

    def payloads(self) -> list[int]:
        raw, body, n = self.raw, self.body, self.n
        if self.format == PLAIN:
            return _from_u16(raw[body + 2 * n : body + 4 * n])
        base, bits = struct.unpack_from("<HB", raw, body)
        codes = _unpack(raw[body + 3 + INDEX_BYTES + n : len(raw)], n, bits)
        payload_of = {c: (c & 1) << 15 | (base + (c >> 1) - 1 if c >> 1 else 0) for c in set(codes)}
        return list(map(payload_of.__getitem__, codes))


def segments(data: bytes) -> list[Segment]:
    """The segments of one version's body."""
    out: list[Segment] = []
    pos, end = 0, len(data)
    while pos < end:
        (scope_len,) = struct.unpack_from("<H", data, pos)
        scope = data[pos + 2 : pos + 2 + scope_len]
        day, n, fmt = _SEGMENT_TAIL.unpack_from(data, pos + 2 + scope_len)
        body = 7 + scope_len
        size = 4 * n if fmt == PLAIN else _packed_size(n, data[pos + body + 2])
        out.append(Segment(scope, day, n, fmt, data[pos : pos + body + size], body))
        pos += body + size
    return out


def versions(value: bytes | None) -> list[tuple[int, int, int]]:
    """(id, start, stop) of each version of a bucket value, stop excluded; the
    body of a version is ``value[start + 8 : stop]``."""
    out: list[tuple[int, int, int]] = []
    if not value:
        return out
    pos, end = 0, len(value)
    while pos < end:
        load_id, size = _HEAD.unpack_from(value, pos)
        out.append((load_id, pos, pos + 8 + size))
        pos += 8 + size
    return out


def visible(value: bytes | None, hidden: frozenset[int] | set[int]) -> tuple[int, bytes] | None:
    """(id, body) of the version readers see: the last one not hidden."""
    for load_id, start, stop in reversed(versions(value)):
        if load_id not in hidden:
            assert value is not None
            return load_id, value[start + 8 : stop]
    return None


def version(load_id: int, parts: Iterable[bytes]) -> bytes:
    body = b"".join(parts)
    return _HEAD.pack(load_id, len(body)) + body


def find(body: bytes, suffix: int, client_id: str | None = None) -> dict[str, int]:
    """Python twin of the Lua lookup, for tests and tools: scope -> answer
    (``as_of`` day << 16 | payload) of one suffix in a version's body, for
    scopes ``*`` and ``client_id`` (every scope when None)."""
    out: dict[str, int] = {}
    for seg in segments(body):
        scope = seg.scope.decode()
        if client_id is not None and scope not in (ALL_CLIENTS, client_id) and not scope.startswith(NAMED_PREFIX):
            continue
        suffixes, payloads = seg.entries()
        i = bisect_left(suffixes, suffix)
        if i < len(suffixes) and suffixes[i] == suffix:
            out[scope] = seg.day << 16 | payloads[i]
    return out


def merge(
    body: bytes | None, scope: bytes, day: int, suffixes: list[int], payloads: list[int], replace: bool = False
) -> tuple[bytes | None, list[int], Counter[int]]:
    """Merge one load's results for one bucket into the visible version's body.

    ``suffixes`` (sorted, distinct) and ``payloads`` are the load's results
    for scope ``scope`` and consultation day ``day``. Returns (the new body, or
    None when nothing changes; the suffixes not applied because a more recent
    result is stored; census deltas by day). With ``replace`` the load's
    entries replace every entry of the scope in the bucket (a directory
    extract: a number absent from the new one is no longer listed).
    """
    census: Counter[int] = Counter()
    if not suffixes:
        return None, [], census
    if not body:  # nothing stored yet
        census[day] = len(suffixes)
        return encode_segment(scope, day, suffixes, payloads), [], census
    if replace:
        kept_others = [seg.raw for seg in segments(body) if seg.scope != scope]
        return b"".join([*kept_others, encode_segment(scope, day, suffixes, payloads)]), [], census
    new = dict(zip(suffixes, payloads, strict=True))
    kept: list[bytes] = []  # segments carried over unchanged
    rewritten: list[bytes] = []
    same_day: dict[int, int] = {}
    skipped: list[int] = []
    mine: list[Segment] = []
    for seg in segments(body):
        if seg.scope != scope:
            kept.append(seg.raw)
        elif seg.day > day:  # a more recent consultation: its numbers keep it
            kept.append(seg.raw)
            for suffix in seg.suffixes():
                if suffix in new:
                    del new[suffix]
                    skipped.append(suffix)
        else:
            mine.append(seg)
    if not new:
        return None, skipped, census
    for seg in mine:
        stored = seg.suffixes()
        if new.keys().isdisjoint(stored):
            if seg.day == day:
                same_day.update(zip(stored, seg.payloads(), strict=True))
            else:
                kept.append(seg.raw)
            continue
        if new.keys() >= set(stored):  # all replaced (a full reload)
            census[seg.day] -= len(stored)
            continue
        left = [(s, p) for s, p in zip(stored, seg.payloads(), strict=True) if s not in new]
        census[seg.day] -= len(stored) - len(left)
        if seg.day == day:
            same_day.update(left)
        elif left:
            rewritten.append(encode_segment(scope, seg.day, [s for s, _ in left], [p for _, p in left]))
    census[day] += len(new)
    if same_day:
        same_day.update(new)
        order = sorted(same_day)
        rewritten.append(encode_segment(scope, day, order, list(map(same_day.__getitem__, order))))
    else:  # ``new`` is in suffix order
        rewritten.append(encode_segment(scope, day, list(new), list(new.values())))
    return b"".join(kept + rewritten), skipped, census


# --- validated rows, spilled by partition -------------------------------------

_BLOCK = struct.Struct("<IB")
#: a row ``number << 16 | payload`` divided by this is the number's bucket
_ROW_BUCKET = SUFFIX_SPACE << 16


def partitions_for(rows: int) -> int:
    """How many partitions a load of about ``rows`` rows is spilled into: each
    is merged in memory (about 100 000 rows a partition, at most 256)."""
    return max(1, min(256, rows // 100_000 + 1))


class PartitionWriter:
    """Buffers rows per partition and appends them to the partition files in
    blocks: ``n u32 | 0 u8 | row u64 × n``, or when a number has 15 digits
    ``n u32 | 1 u8 | number u64 × n | payload u16 × n``. A row is one
    integer, ``number << 16 | payload`` (E.164 digits as an integer)."""

    def __init__(self, directory: Path, partitions: int, tag: str, flush_rows: int = 1_000_000) -> None:
        self.directory = directory
        self.partitions = partitions
        self.tag = tag
        self.flush_rows = flush_rows
        self.rows: list[list[int]] = [[] for _ in range(partitions)]
        self.buffered = 0

    def add(self, rows: Sequence[int]) -> None:
        """Add rows in file order."""
        count = self.partitions
        if count == 1:
            self.rows[0] += rows
        else:
            add = [part.append for part in self.rows]
            for part, row in zip(map(count.__rmod__, map(_ROW_BUCKET.__rfloordiv__, rows)), rows, strict=False):
                add[part](row)
        self.buffered += len(rows)
        if self.buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for part in range(self.partitions):
            rows = self.rows[part]
            if not rows:
                continue
            with (self.directory / f"{part:04d}-{self.tag}").open("ab") as handle:
                try:
                    data = array("Q", rows).tobytes()
                    handle.write(_BLOCK.pack(len(rows), 0) + data)
                except OverflowError:  # a 15-digit number
                    handle.write(_BLOCK.pack(len(rows), 1))
                    handle.write(array("Q", map((16).__rrshift__, rows)).tobytes())
                    handle.write(_u16(map((0xFFFF).__and__, rows)))
            self.rows[part] = []
        self.buffered = 0


def read_partition(directory: Path, part: int) -> list[int]:
    """A partition's rows (``number << 16 | payload``) in file order (files sorted by tag)."""
    rows: list[int] = []
    for path in sorted(directory.glob(f"{part:04d}-*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            n, kind = _BLOCK.unpack_from(data, pos)
            pos += _BLOCK.size
            numbers: array[int] = array("Q")
            numbers.frombytes(data[pos : pos + 8 * n])
            pos += 8 * n
            if kind == 0:
                rows += numbers.tolist()
                continue
            payloads = _from_u16(data[pos : pos + 2 * n])
            pos += 2 * n
            rows += map(or_, map((16).__rlshift__, numbers), payloads)
    return rows


def pack_row(number: int, bits: int) -> int:
    return number << 16 | bits


@dataclass
class RegisterRows:
    """The validated rows of one register load, spilled to partition files (a
    temporary directory) so that tens of millions of rows load in constant memory."""

    partitions: int
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callguard-register-")))
    rows: int = 0
    opposed: int = 0

    def __len__(self) -> int:
        return self.rows

    def writer(self, tag: str = "0") -> PartitionWriter:
        return PartitionWriter(self.directory, self.partitions, tag)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, bool, date | None]], expected: int = 0) -> RegisterRows:
        """Spill (E.164, opposed, registered_at) rows (tests, benchmarks, tools)."""
        spill = cls(partitions_for(expected))
        writer = spill.writer()
        buffer: list[int] = []
        for e164, opposed, registered_at in rows:
            buffer.append(pack_row(e164_number(e164), payload(opposed, registered_at)))
            spill.opposed += opposed
            if len(buffer) >= 100_000:
                writer.add(buffer)
                spill.rows += len(buffer)
                buffer = []
        writer.add(buffer)
        spill.rows += len(buffer)
        writer.flush()
        return spill


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
    rows = read_partition(Path(plan.directory), part)
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
        bucket = rows[i] // _ROW_BUCKET
        j = bisect_left(rows, (bucket + 1) * _ROW_BUCKET, i)
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


def process_context() -> Any:
    import multiprocessing

    # spawn: the loaders run inside an event loop and Redis connections; a
    # fresh interpreter inherits neither
    return multiprocessing.get_context("spawn")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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


# --- reading (tests, tools) ----------------------------------------------------------


def _results(value: bytes | None, hidden: Iterable[bytes], suffix: int) -> dict[str, RegisterResult]:
    seen = visible(value, {int(x) for x in hidden})
    if seen is None:
        return {}
    return {scope: register_result(answer, scope) for scope, answer in find(seen[1], suffix).items()}


async def results(client: Any, e164: str) -> dict[str, RegisterResult]:
    """Every scope's current result for one number, as readers see it
    (``client`` must not decode responses)."""
    key, suffix = register_key(e164)
    async with client.pipeline(transaction=not is_cluster(client)) as pipe:
        pipe.get(key)
        pipe.smembers(HIDDEN_KEY)
        value, hidden = await pipe.execute()
    return _results(value, hidden, suffix)


def read_results(client: redis.Redis, e164: str) -> dict[str, RegisterResult]:
    """The synchronous twin of :func:`results` (tests, tools); ``client`` may decode responses."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    raw = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
    try:
        key, suffix = register_key(e164)
        with raw.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.smembers(HIDDEN_KEY)
            value, hidden = pipe.execute()
    finally:
        raw.close()
    return _results(value, hidden, suffix)
