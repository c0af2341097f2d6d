"""How a register bucket's value is encoded (pure functions, no Redis).

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

What a number costs in Redis memory: ``./dev bench register`` and the README's
"Data files".
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from callguard.core.facts import RegisterResult
from callguard.core.schema import ALL_CLIENTS

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

_LITTLE = sys.byteorder == "little"
_HEAD = struct.Struct("<II")
_SEGMENT_TAIL = struct.Struct("<HHB")


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


def pack_u16(values: Iterable[int]) -> bytes:
    a = array("H", values)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        a.byteswap()
    return a.tobytes()


def unpack_u16(data: bytes) -> list[int]:
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
        return head + _SEGMENT_TAIL.pack(day, n, PLAIN) + pack_u16(suffixes) + pack_u16(payloads)
    code = {p: p >> 15 | ((p & 0x7FFF) - base + 1 if p & 0x7FFF else 0) << 1 for p in distinct}
    starts = [bisect_left(suffixes, high << 8) for high in range(HIGH_PARTS)]
    return b"".join(
        (
            head,
            _SEGMENT_TAIL.pack(day, n, INDEXED),
            struct.pack("<HB", base, bits),
            pack_u16(starts),
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
            return unpack_u16(raw[body : body + 2 * n])
        body += 3
        starts = [*unpack_u16(raw[body : body + INDEX_BYTES]), n]
        lows = raw[body + INDEX_BYTES : body + INDEX_BYTES + n]
        suffixes: list[int] = []
        for high in range(HIGH_PARTS):
            suffixes += map((high << 8).__add__, lows[starts[high] : starts[high + 1]])
        return suffixes

    def payloads(self) -> list[int]:
        raw, body, n = self.raw, self.body, self.n
        if self.format == PLAIN:
            return unpack_u16(raw[body + 2 * n : body + 4 * n])
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
