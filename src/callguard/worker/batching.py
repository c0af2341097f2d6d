"""Batches of raw records straight from Faust's consumer, without its per-event path.

Faust turns every fetched record into a message, an event, a task per
delivery (``Service.wait_first``), a queue entry, a stream step with sensors
and an ack: more per record than the guard's own work (DEVELOPERS.md has
the figures). For the topics given to :func:`install`, the consumer's
``getmany`` instead hands each fetched partition's records, as they are, to a
:class:`BatchSource`; an agent takes them in batches (:meth:`BatchSource.take`)
and acknowledges a whole batch at once (:meth:`BatchSource.done`).

What stays Faust's: the consumer group and its rebalances, the subscription,
offsets and commits (``Consumer._acked`` and the commit timer), flow control
and the agent that supervises the work. What this module keeps of Faust's
per-record bookkeeping, per fetched chunk instead of per record:

- offsets: a batch is acked only by :meth:`BatchSource.done`, called after the
  guard's messages were acknowledged by the broker, so a commit never covers
  an intent without its decision (at-least-once); the range from a chunk's
  first to last offset is acked, gaps between fetches are recorded like
  Faust's ``_drain_messages`` does (compacted or transactional topics);
- rebalances: chunks not yet taken are dropped when Faust clears its buffers
  (``flow_control.clear()`` on revocation), a batch in progress is registered
  in the consumer's unacked set so that Faust's ``wait_empty`` waits for it
  before committing and giving partitions away, and chunks fetched in an
  earlier group generation are dropped unacked (they are fetched again from
  the committed offset);
- back-pressure: at most ``max_buffered`` records wait; beyond that the
  consumer's fetch loop waits (as it does when a Faust stream buffer is full);
- commits: every ``broker_commit_every`` acked records a commit starts in the
  background (Faust's timer also commits every ``broker_commit_interval``);
- the monitor's per-partition inbound time and end offset, which Faust's
  livelock detector reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from callguard.worker.guard import Raw

log = logging.getLogger("callguard.batching")


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one partition, from one fetch.

    Acking it acks every offset from its first record to ``last`` (by default
    its last record's): offsets missing inside a fetch (compacted records,
    transaction markers) are acked with it, so Faust's commits go past them.
    """

    tp: Any
    records: list[Any]
    generation: int
    last: int = -1

    def __post_init__(self) -> None:
        if self.last < 0:
            self.last = self.records[-1].offset


class InFlight:
    """Stands for a batch being handled in the consumer's set of unacked
    messages: Faust's ``wait_empty`` (before a rebalance commit or a shutdown)
    waits until it is acked."""

    __slots__ = ("__weakref__", "acked", "refcount")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1


@dataclass(slots=True)
class Batch:
    """Records handed to an agent at once, acked at once."""

    chunks: list[Chunk]
    generation: int
    raws: list[Raw]
    in_flight: InFlight = field(default_factory=InFlight)

    def __len__(self) -> int:
        return len(self.raws)


def _raws(chunks: Iterable[Chunk]) -> list[Raw]:
    return [
        Raw(r.value, r.topic, r.partition, r.offset, r.timestamp / 1000 if r.timestamp is not None else None)
        for chunk in chunks
        for r in chunk.records
    ]


class BatchSource:
    """The records of one topic, fetched by Faust's consumer, in batches."""

    def __init__(self, app: Any, channel: Any, max_buffered: int) -> None:
        self.app = app
        self.channel = channel  # the Faust topic
        self.topic: str = channel.get_topic_name()
        self.max_buffered = max_buffered
        self._chunks: deque[Chunk] = deque()
        self._buffered = 0
        self._arrived = asyncio.Event()
        self._space = asyncio.Event()
        self._commit: asyncio.Task[Any] | None = None
        app.flow_control.manage_queue(self)  # cleared with Faust's stream buffers

    # --- the consumer side (Faust's fetch loop) ---

    async def offer(self, consumer: Any, tp: Any, records: list[Any], generation: int) -> None:
        """Take one fetched partition's records (called by the consumer)."""
        read_offset = consumer._read_offset[tp]
        if read_offset is not None:
            records = [r for r in records if r.offset >= read_offset]
            if not records:
                return
            if records[0].offset - read_offset > 1 and read_offset and self.app.topics.acks_enabled_for(self.topic):
                await consumer._add_gap(tp, read_offset + 1, records[0].offset)
        while self._buffered >= self.max_buffered:
            self._space.clear()
            waited = await consumer.wait_first(self._space.wait(), consumer.suspend_flow.wait())
            if waited.stopped or consumer.suspend_flow.is_set() or generation != self.app.consumer_generation_id:
                return  # not read: fetched again from the committed offset after the rebalance
        consumer._read_offset[tp] = records[-1].offset
        self.app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
        self._chunks.append(Chunk(tp, records, generation))
        self._buffered += len(records)
        self._arrived.set()

    def clear(self) -> None:
        """Drop what was not taken yet (Faust's ``flow_control.clear()``)."""
        self._chunks.clear()
        self._buffered = 0
        self._space.set()

    # --- the agent side ---

    async def take(self, max_records: int) -> Batch:
        """The chunks waiting now, at most ``max_records`` records; waits for the first."""
        app = self.app
        while True:
            while not self._chunks:
                self._arrived.clear()
                await self._arrived.wait()
            await app.flow_control.acquire()  # not while a rebalance is under way
            generation = app.consumer_generation_id
            taken: list[Chunk] = []
            count = 0
            while self._chunks and count < max_records:
                chunk = self._chunks[0]
                if chunk.generation != generation:  # fetched before a rebalance: fetched again later
                    self._chunks.popleft()
                    self._buffered -= len(chunk.records)
                    continue
                room = max_records - count
                if len(chunk.records) > room:
                    # the taken half acks up to the rest's first record: offsets missing between them go with it
                    taken.append(Chunk(chunk.tp, chunk.records[:room], generation, chunk.records[room].offset - 1))
                    chunk.records = chunk.records[room:]
                    count += room
                    break
                self._chunks.popleft()
                taken.append(chunk)
                count += len(chunk.records)
            self._buffered -= count
            self._space.set()
            if not taken:
                continue
            batch = Batch(taken, generation, _raws(taken))
            consumer = app.consumer
            consumer._unacked_messages.add(batch.in_flight)
            now = time.monotonic()
            inbound = app.monitor.stream_inbound_time
            for chunk in taken:
                inbound[chunk.tp] = now
            return batch

    async def batches(self, max_records: int) -> AsyncIterator[Batch]:
        while True:
            yield await self.take(max_records)

    def done(self, batch: Batch) -> None:
        """Ack every record of ``batch``: its offsets may now be committed."""
        app = self.app
        consumer = app.consumer
        try:
            if batch.generation != app.consumer_generation_id:
                log.info("a batch of %d records outlived its group generation: not acked, read again", len(batch))
                return
            with ack_lock:
                for chunk in batch.chunks:
                    tp = chunk.tp
                    first, last = chunk.records[0].offset, chunk.last
                    committed = consumer._committed_offset[tp]
                    if committed is not None:
                        first = max(first, committed)
                    if first > last:
                        continue
                    index = consumer._acked_index[tp]
                    offsets = range(first, last + 1)
                    fresh = list(offsets) if index.isdisjoint(offsets) else [o for o in offsets if o not in index]
                    index.update(fresh)
                    consumer._acked[tp].extend(fresh)
                    consumer._n_acked += len(fresh)
        finally:
            batch.in_flight.acked = True
            consumer._unacked_messages.discard(batch.in_flight)
            notify(consumer._waiting_for_ack)
        every = consumer._commit_every
        if every is not None and consumer._n_acked >= every and (self._commit is None or self._commit.done()):
            consumer._n_acked = 0
            self._commit = asyncio.ensure_future(self._commit_now(consumer))

    async def _commit_now(self, consumer: Any) -> None:
        try:
            await consumer.commit()
        except Exception as exc:  # the commit timer tries again within broker_commit_interval
            log.warning("commit failed (%s); the commit timer retries", exc)


def install(app: Any, sources: Iterable[BatchSource]) -> None:
    """Route the records of each source's topic to it instead of Faust's
    streams: subclasses the transport's consumer (before the app creates it)
    and has Faust's conductor subscribe to the topics (an agent that does not
    iterate its stream does not subscribe)."""
    by_topic = {source.topic: source for source in sources}
    transport = app.transport
    transport.Consumer = _batching(transport.Consumer, by_topic)
    for source in by_topic.values():
        app.topics.add(source.channel)


def _batching(base: type, by_topic: dict[str, BatchSource]) -> type:
    """``base`` (a Faust consumer class) whose ``getmany`` gives the records of
    ``by_topic``'s topics to their sources and yields the others as usual."""

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        # Faust's Consumer.getmany, less the per-record path for our topics
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        others = {}
        for tp, tp_records in records.items():
            source = by_topic.get(tp.topic)
            if source is None:
                others[tp] = tp_records
            elif tp_records and (
                active_partitions is None or tp in active_partitions or tp in self._buffered_partitions
            ):
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    return
                await source.offer(self, tp, tp_records, generation_id)
        if not others:
            return
        to_message = self._to_message
        for tp, record in self.scheduler.iterate(others):
            if not self.flow_active:
                break
            if self.app.consumer_generation_id != generation_id:
                break
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    return type(f"Batching{base.__name__}", (base,), {"getmany": getmany})
