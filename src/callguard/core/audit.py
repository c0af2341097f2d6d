"""A tamper-evident audit trail: a hash chain per partition of ``callguard.audit``.

Courts have rejected bare database rows as proof of compliance; a record
that cannot be edited, dropped or reordered unnoticed is evidence. Each audit
record carries ``chain.prev``: the SHA-256 of the exact bytes of the previous
record in its partition (:data:`GENESIS` for the first). Changing any record
changes its hash, so the next record no longer points at it; the newest
records, which nothing points at yet, are covered by the head checkpoints
the worker keeps (offset and hash of the last record it wrote per partition).

:func:`link`, :func:`verify` and :class:`ChainCheck` are pure;
:class:`ChainHeads` holds the worker's heads, and the functions at the end
read the topic back (I/O, with a consumer the caller makes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def link(record: dict[str, Any], prev: str) -> tuple[bytes, str]:
    """Encode ``record`` chained to ``prev``; returns its bytes and their hash
    (the ``prev`` of the next record)."""
    record["chain"] = {"prev": prev}
    value = orjson.dumps(record)
    return value, digest(value)


@dataclass(frozen=True, slots=True)
class Stored:
    """One audit record as read back: where it is and its exact bytes."""

    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Problem:
    partition: int
    offset: int
    kind: str  # "broken_link", "unchained", "not_json", "checkpoint_mismatch", "checkpoint_missing"
    detail: str

    def __str__(self) -> str:
        return f"partition {self.partition} offset {self.offset}: {self.kind}: {self.detail}"


@dataclass
class Report:
    records: dict[int, int] = field(default_factory=dict)  # partition -> records checked
    first_offset: dict[int, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    last_offset: dict[int, int] = field(default_factory=dict)  # partition -> last record checked
    #: For each watched record (:class:`ChainCheck`): its SHA-256, and whether
    #: the record after it in its partition commits to that hash (the offset of
    #: that record and True or False; None when no record followed it).
    watched: dict[tuple[int, int], Watched] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Watched:
    """What the chain says about one record a caller asked about."""

    sha256: str
    #: the record has a ``chain.prev`` equal to the hash of the record before it
    #: (False: that record was edited, dropped or reordered; None: it is the
    #: first record checked and starts after offset 0, so nothing was compared)
    linked_to_previous: bool | None
    #: offset of the next record of the partition, and whether its ``chain.prev``
    #: is this record's hash (False: this record's bytes are not the ones the
    #: chain committed to); None when no record followed it
    next_offset: int | None = None
    next_links_here: bool | None = None


class ChainCheck:
    """:func:`verify`, one record at a time, so a caller can stream a long
    segment of a partition through it and keep nothing but the counts.

    ``checkpoints`` are the worker's heads, as for :func:`verify`. ``watch``
    names records (partition, offset) the caller wants a verdict on:
    :attr:`Report.watched` then says whether each is linked to the record
    before it and whether the record after it commits to its bytes.
    """

    def __init__(
        self,
        checkpoints: Mapping[int, tuple[int, str]] | None = None,
        watch: Collection[tuple[int, int]] = (),
    ) -> None:
        self.report = Report()
        self._checkpoints = dict(checkpoints or {})
        self._watch = set(watch)
        self._last_hash: dict[int, str] = {}
        self._last_watched: dict[int, Watched] = {}  # partition -> watched record awaiting its successor
        self._at_checkpoint: dict[int, str] = {}  # partition -> hash of the checkpointed record, once seen

    def add(self, stored: Stored) -> None:
        report = self.report
        p = stored.partition
        value_hash = digest(stored.value)
        pending = self._last_watched.pop(p, None)
        try:
            record = orjson.loads(stored.value)
            prev = record["chain"]["prev"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            report.problems.append(Problem(p, stored.offset, "unchained", "record has no chain.prev"))
            if pending is not None:
                pending.next_offset, pending.next_links_here = stored.offset, False
            self._last_hash[p] = value_hash
            self._watched(stored, value_hash, False)
            return
        linked: bool | None
        if p not in self._last_hash:
            report.first_offset[p] = stored.offset
            linked = None
            if stored.offset == 0:
                linked = prev == GENESIS
                if not linked:
                    report.problems.append(Problem(p, 0, "broken_link", "first record does not start the chain"))
        else:
            linked = prev == self._last_hash[p]
            if not linked:
                report.problems.append(
                    Problem(p, stored.offset, "broken_link", "previous record edited, dropped or reordered")
                )
        if pending is not None:
            pending.next_offset, pending.next_links_here = stored.offset, bool(linked)
        self._last_hash[p] = value_hash
        report.records[p] = report.records.get(p, 0) + 1
        report.last_offset[p] = stored.offset
        if p in self._checkpoints and self._checkpoints[p][0] == stored.offset:
            self._at_checkpoint[p] = value_hash
        self._watched(stored, value_hash, linked)

    def _watched(self, stored: Stored, value_hash: str, linked: bool | None) -> None:
        key = (stored.partition, stored.offset)
        if key in self._watch:
            watched = Watched(value_hash, linked)
            self.report.watched[key] = watched
            self._last_watched[stored.partition] = watched

    def finish(self) -> Report:
        """The report, with the worker's head checkpoints checked against the records seen."""
        report = self.report
        for p, (offset, expected) in self._checkpoints.items():
            found = self._at_checkpoint.get(p)
            if found is None:
                if offset >= report.first_offset.get(p, 0):
                    report.problems.append(Problem(p, offset, "checkpoint_missing", "checkpointed record not found"))
            elif found != expected:
                report.problems.append(Problem(p, offset, "checkpoint_mismatch", "record differs from its checkpoint"))
        return report


def verify(records: Iterable[Stored], checkpoints: Mapping[int, tuple[int, str]] | None = None) -> Report:
    """Check the chain of every partition; ``records`` in offset order per partition.

    A broken link at offset *o* means the record before *o* was edited,
    dropped, or the two were reordered. A chain that starts after offset 0
    with a non-genesis ``prev`` is accepted from there (older records expired
    by retention) and reported in ``first_offset``. ``checkpoints`` are the
    worker's heads (partition -> (offset, hash)): the record at that offset
    must have that hash, which also covers the newest records.
    """
    check = ChainCheck(checkpoints)
    for stored in records:
        check.add(stored)
    return check.finish()


class ChainHeads:
    """The worker's view of each audit partition's last record.

    A partition's head is loaded from the broker the first time the worker
    writes to it, and again after a rebalance or a failed send (:meth:`forget`),
    so a chain continues across workers and restarts.
    """

    def __init__(self, load_tail: Callable[[int], Awaitable[bytes | None]]) -> None:
        self.load_tail = load_tail
        self.heads: dict[int, str] = {}
        #: partition -> (offset, hash) of the last record acknowledged: the checkpoints
        self.acknowledged: dict[int, tuple[int, str]] = {}
        self.generation = 0  # bumped by forget(), so a send in flight cannot restore old heads

    async def load(self, partitions: Iterable[int]) -> dict[int, str]:
        """A copy of the heads of ``partitions``, loaded from the broker where
        this worker does not know them yet. The caller links records to the
        copy and hands it to :meth:`advance` once the broker acknowledged them."""
        for partition in partitions:
            if partition not in self.heads:
                tail = await self.load_tail(partition)
                self.heads[partition] = GENESIS if tail is None else digest(tail)
        return {partition: self.heads[partition] for partition in partitions}

    def advance(self, heads: dict[int, str], generation: int) -> None:
        """Adopt ``heads`` unless :meth:`forget` ran meanwhile (then the next
        batch reloads them from the broker, which holds what was acknowledged)."""
        if generation == self.generation:
            self.heads.update(heads)

    def forget(self) -> None:
        self.heads.clear()
        self.generation += 1
