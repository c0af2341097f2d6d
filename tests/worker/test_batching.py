"""The intents' batch path on its own: ``BatchSource`` (Faust's consumer
bookkeeping, per chunk) and ``BatchPublisher`` (one record batch per partition).

``BatchSource`` is driven with stand-ins for the few attributes of Faust's app
and consumer it reads: in-process bookkeeping (offsets, acks, generation ids),
not broker I/O; flow control is Faust's own ``FlowControlEvent``.
``BatchPublisher`` runs against the session's real broker with a real
aiokafka producer and is checked by reading every message back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

from callguard.dev.embedded import Embedded
from callguard.kafka.publishing import BatchPublisher, Message
from callguard.worker.batching import Batch, BatchSource
from tests.conftest import bootstrap

TOPIC = "intents"
P0, P1 = TP(TOPIC, 0), TP(TOPIC, 1)


# --- stand-ins for Faust's app and consumer -----------------------------------------


class Waited:
    """What ``Service.wait_first`` returns, as far as ``offer`` reads it."""

    def __init__(self, stopped: bool) -> None:
        self.stopped = stopped


class StandInConsumer:
    """The consumer attributes ``BatchSource`` reads and writes, with Faust's
    defaults (``_read_offset`` and ``_committed_offset`` default to None)."""

    def __init__(self) -> None:
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)  # for Faust's _new_offset
        self._n_acked = 0
        self._unacked_messages: weakref.WeakSet[Any] = weakref.WeakSet()
        self._waiting_for_ack: asyncio.Future[Any] | None = None
        self._commit_every: int | None = None
        self.suspend_flow = asyncio.Event()
        self.stopped = False
        self.gaps: list[tuple[TP, int, int]] = []
        self.commits = 0
        self.commit_gate: asyncio.Event | None = None  # set: commit() waits for it
        self.waits = 0

    async def wait_first(self, *coros: Awaitable[Any]) -> Waited:
        self.waits += 1
        futures = [asyncio.ensure_future(coro) for coro in coros]
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in futures:
                future.cancel()
        return Waited(self.stopped)

    def highwater(self, tp: TP) -> int:
        return 1000 + tp.partition

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))

    async def commit(self) -> bool:
        self.commits += 1
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        return True

    def new_offset(self, tp: TP) -> int | None:
        """What Faust's own ``Consumer._new_offset`` would commit next for ``tp``."""
        result: int | None = FaustConsumer._new_offset(self, tp)  # type: ignore[arg-type]
        if result is not None:
            self._committed_offset[tp] = result
        return result


class StandInMonitor:
    def __init__(self) -> None:
        self.end_offsets: dict[TP, int] = {}
        self.stream_inbound_time: dict[TP, float] = {}

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        self.end_offsets[tp] = offset


class StandInTopics:
    def __init__(self) -> None:
        self.acks = True

    def acks_enabled_for(self, topic: str) -> bool:
        return self.acks


class StandInApp:
    def __init__(self) -> None:
        self.consumer = StandInConsumer()
        self.consumer_generation_id = 1
        self.flow_control = FlowControlEvent(initially_suspended=False)
        self.monitor = StandInMonitor()
        self.topics = StandInTopics()


class StandInChannel:
    def get_topic_name(self) -> str:
        return TOPIC


def make_source(max_buffered: int = 100) -> tuple[StandInApp, StandInConsumer, BatchSource]:
    app = StandInApp()
    return app, app.consumer, BatchSource(app, StandInChannel(), max_buffered)


def records(tp: TP, *offsets: int) -> list[Any]:
    return [
        ConsumerRecord(tp.topic, tp.partition, o, 1_700_000_000_000 + o, 0, None, b"v%d" % o, None, 0, 3, ())
        for o in offsets
    ]


def where(batch: Batch) -> list[tuple[int, int]]:
    return [(raw.partition, raw.offset) for raw in batch.raws]


async def offer(source: BatchSource, app: StandInApp, tp: TP, *offsets: int) -> None:
    """``offer`` as the fetch loop calls it; never left hanging if it blocks for good."""
    await asyncio.wait_for(source.offer(app.consumer, tp, records(tp, *offsets), app.consumer_generation_id), 2)


async def take(source: BatchSource, max_records: int) -> Batch:
    """``take``, failing instead of hanging when nothing comes."""
    return await asyncio.wait_for(source.take(max_records), 1)


async def nothing_taken(source: BatchSource, max_records: int = 100) -> bool:
    """True if ``take`` is still waiting a moment later (it never returns an empty batch)."""
    try:
        await asyncio.wait_for(source.take(max_records), 0.05)
    except TimeoutError:
        return True
    return False


async def still_waiting(task: asyncio.Task[Any]) -> bool:
    await asyncio.sleep(0.02)
    return not task.done()


# --- BatchSource: taking batches -----------------------------------------------------


async def test_take_respects_max_records_and_splits_a_chunk_keeping_order() -> None:
    """A batch never exceeds max_records; a chunk that does not fit is split and
    its rest comes first in the next batch, so every partition stays in order;
    a batch ending exactly at a chunk's end carries no empty chunk."""
    app, consumer, source = make_source()
    await offer(source, app, P0, 0, 1, 2, 3, 4)
    await offer(source, app, P1, 7, 8, 9)
    await offer(source, app, P0, 5)
    batches = [await take(source, 3), await take(source, 2), await take(source, 3), await take(source, 3)]
    assert [where(batch) for batch in batches] == [
        [(0, 0), (0, 1), (0, 2)],
        [(0, 3), (0, 4)],  # exactly the rest of the first chunk
        [(1, 7), (1, 8), (1, 9)],
        [(0, 5)],
    ]
    assert await nothing_taken(source)
    for batch in batches:
        assert all(chunk.records for chunk in batch.chunks)
        source.done(batch)
    assert consumer._acked == {P0: [0, 1, 2, 3, 4, 5], P1: [7, 8, 9]}


async def test_take_hands_records_as_raws_and_registers_the_batch_as_unacked() -> None:
    """Faust's wait_empty (before a rebalance commit) must see a batch in
    progress, and the livelock detector needs the inbound time."""
    app, consumer, source = make_source()
    await offer(source, app, P0, 5, 6)
    batch = await take(source, 10)
    raw = batch.raws[0]
    assert (raw.value, raw.topic, raw.partition, raw.offset) == (b"v5", TOPIC, 0, 5)
    assert raw.timestamp == pytest.approx(1_700_000_000.005)
    assert len(batch) == 2
    assert set(consumer._unacked_messages) == {batch.in_flight}
    assert P0 in app.monitor.stream_inbound_time
    assert app.monitor.end_offsets == {P0: 1000}


async def test_take_waits_while_flow_control_is_suspended() -> None:
    """No batch is handed out while a rebalance is under way, and what was
    buffered before it is gone after it (Faust's resume() clears the buffers)."""
    app, consumer, source = make_source()
    await offer(source, app, P0, 0, 1)
    app.flow_control.suspend()
    task = asyncio.ensure_future(source.take(10))
    assert await still_waiting(task)
    app.flow_control.resume()
    assert await still_waiting(task)  # neither the cleared records nor an empty batch
    consumer._read_offset[P0] = 0  # Faust's seek to the committed offset
    await offer(source, app, P0, 0, 1, 2)
    assert where(await asyncio.wait_for(task, 1)) == [(0, 0), (0, 1), (0, 2)]


async def test_take_drops_chunks_of_an_older_generation() -> None:
    """Chunks fetched before a rebalance are fetched again from the committed
    offset: handing them out would decide those intents twice."""
    app, consumer, source = make_source(max_buffered=4)
    await offer(source, app, P0, 0, 1, 2)
    app.consumer_generation_id = 2
    consumer._read_offset[P0] = 0  # Faust's seek to the committed offset after the rebalance
    assert await nothing_taken(source)  # only old chunks: no empty batch either
    await offer(source, app, P0, 0, 1)
    await offer(source, app, P1, 4)
    batch = await take(source, 10)
    assert where(batch) == [(0, 0), (0, 1), (1, 4)]
    assert batch.generation == 2
    await offer(source, app, P0, 2, 3, 4, 5)  # the dropped records no longer count against max_buffered
    assert where(await take(source, 10)) == [(0, 2), (0, 3), (0, 4), (0, 5)]


# --- BatchSource: offering fetched records ---------------------------------------


async def test_offer_filters_records_below_the_read_offset() -> None:
    """Records already read (re-fetched after a seek) are not offered twice;
    like Faust's _drain_messages, the record at the read offset is kept."""
    app, consumer, source = make_source()
    consumer._read_offset[P0] = 5
    await offer(source, app, P0, 3, 4, 5, 6, 7)
    assert consumer._read_offset[P0] == 7
    assert where(await take(source, 10)) == [(0, 5), (0, 6), (0, 7)]
    await offer(source, app, P0, 2, 3, 4)  # all below: nothing buffered, read offset unchanged
    assert consumer._read_offset[P0] == 7
    assert await nothing_taken(source)


async def test_a_gap_before_the_first_record_is_recorded() -> None:
    """Offsets skipped between fetches (compaction, transaction markers) must be
    recorded as a gap, or Faust never commits past them."""
    app, consumer, source = make_source()
    consumer._read_offset[P0] = 5
    await offer(source, app, P0, 9, 10)
    assert consumer.gaps == [(P0, 6, 9)]
    await offer(source, app, P0, 11)  # consecutive: no gap
    assert consumer.gaps == [(P0, 6, 9)]
    app.topics.acks = False  # Faust records gaps only where acks are enabled
    await offer(source, app, P0, 20)
    assert consumer.gaps == [(P0, 6, 9)]


async def test_offer_waits_while_max_buffered_records_wait_and_continues_after_take() -> None:
    """Back-pressure: the fetch loop waits instead of buffering without bound."""
    app, consumer, source = make_source(max_buffered=4)
    await offer(source, app, P0, 0, 1, 2, 3, 4, 5)  # one chunk may go past max_buffered
    assert where(await take(source, 2)) == [(0, 0), (0, 1)]  # 4 left: still full
    blocked = asyncio.ensure_future(offer(source, app, P0, 6, 7))
    assert await still_waiting(blocked)
    assert consumer.waits == 1  # waits for space, does not poll
    assert consumer._read_offset[P0] == 5  # not read yet
    assert where(await take(source, 1)) == [(0, 2)]
    await asyncio.wait_for(blocked, 1)
    assert consumer._read_offset[P0] == 7
    assert where(await take(source, 10)) == [(0, 3), (0, 4), (0, 5), (0, 6), (0, 7)]


@pytest.mark.parametrize("how", ["suspend_flow", "new_generation", "stopped"])
async def test_an_offer_waiting_for_space_gives_up_on_a_rebalance(how: str) -> None:
    """Records waiting for space when a rebalance starts are not read (the
    read offset stays): they are fetched again from the committed offset."""
    app, consumer, source = make_source(max_buffered=2)
    await offer(source, app, P0, 0, 1)
    blocked = asyncio.ensure_future(offer(source, app, P0, 2, 3))
    assert await still_waiting(blocked)
    if how == "suspend_flow":
        consumer.suspend_flow.set()
    else:
        if how == "new_generation":
            app.consumer_generation_id = 2
        else:
            consumer.stopped = True
        source._space.set()  # woken by the stop or by space freed in the meantime
    await asyncio.wait_for(blocked, 1)
    assert consumer._read_offset[P0] == 1
    app.consumer_generation_id = 1
    assert where(await take(source, 10)) == [(0, 0), (0, 1)]
    assert await nothing_taken(source)


async def test_clear_drops_buffered_chunks_and_frees_their_space() -> None:
    """Faust clears its buffers on revocation; the source must too, and an
    offer waiting for space may go on."""
    app, _, source = make_source(max_buffered=2)
    await offer(source, app, P0, 0, 1)
    blocked = asyncio.ensure_future(offer(source, app, P1, 5))
    assert await still_waiting(blocked)
    app.flow_control.clear()  # how Faust reaches the source
    await asyncio.wait_for(blocked, 1)
    assert where(await take(source, 10)) == [(1, 5)]
    assert await nothing_taken(source)


# --- BatchSource: acking --------------------------------------------------------------


async def test_done_acks_every_offset_from_first_to_last_of_each_chunk() -> None:
    """Offsets missing inside a chunk (compaction, transaction markers) are
    acked too, or the commit would stop at the first of them."""
    app, consumer, source = make_source()
    await offer(source, app, P0, 10, 12, 15)
    await offer(source, app, P1, 3, 4)
    batch = await take(source, 10)
    consumer._waiting_for_ack = waiting = asyncio.get_running_loop().create_future()
    source.done(batch)
    assert consumer._acked == {P0: [10, 11, 12, 13, 14, 15], P1: [3, 4]}
    assert consumer._acked_index == {P0: set(range(10, 16)), P1: {3, 4}}
    assert consumer._n_acked == 8
    assert not consumer._unacked_messages
    assert batch.in_flight.acked
    assert waiting.done()  # wakes Faust's wait_empty
    assert consumer.new_offset(P0) == 16  # Faust's own commit bookkeeping agrees


async def test_done_skips_offsets_below_the_committed_offset_and_those_already_acked() -> None:
    """Faust's committed offset is the next one to read: offsets below it are
    done, the committed one is not; an offset acked twice would count twice."""
    app, consumer, source = make_source()
    consumer._committed_offset[P0] = 12
    consumer._acked[P0] = [13]
    consumer._acked_index[P0] = {13}
    consumer._committed_offset[P1] = 50
    await offer(source, app, P0, 10, 11, 12, 13, 14, 15)
    await offer(source, app, P1, 40, 41)
    source.done(await take(source, 10))
    assert consumer._acked[P0] == [13, 12, 14, 15]
    assert consumer._acked_index[P0] == {12, 13, 14, 15}
    assert consumer._acked[P1] == []
    assert consumer._n_acked == 3


async def test_done_after_a_generation_change_acks_nothing_but_releases_the_batch() -> None:
    """A batch that outlived its generation is read again by whoever owns the
    partition now; it must still leave the unacked set, or wait_empty hangs."""
    app, consumer, source = make_source()
    await offer(source, app, P0, 0, 1, 2)
    batch = await take(source, 10)
    app.consumer_generation_id = 2
    consumer._waiting_for_ack = waiting = asyncio.get_running_loop().create_future()
    source.done(batch)
    assert not consumer._acked[P0]
    assert consumer._n_acked == 0
    assert not consumer._unacked_messages
    assert batch.in_flight.acked
    assert waiting.done()


async def test_done_starts_one_commit_once_commit_every_records_are_acked() -> None:
    """Commits follow broker_commit_every like Faust's per-message path, without
    piling up while one is still running."""
    app, consumer, source = make_source()
    consumer._commit_every = 5
    consumer.commit_gate = gate = asyncio.Event()
    await offer(source, app, P0, *range(12))
    source.done(await take(source, 3))
    await asyncio.sleep(0)
    assert (consumer.commits, consumer._n_acked) == (0, 3)
    source.done(await take(source, 2))  # exactly commit_every
    await asyncio.sleep(0)
    assert (consumer.commits, consumer._n_acked) == (1, 0)
    source.done(await take(source, 7))  # 7 more while the first commit runs: no second one
    await asyncio.sleep(0)
    assert (consumer.commits, consumer._n_acked) == (1, 7)
    gate.set()
    await asyncio.sleep(0)
    await offer(source, app, P0, 12)
    source.done(await take(source, 1))
    await asyncio.sleep(0)
    assert (consumer.commits, consumer._n_acked) == (2, 0)  # the next done() after it starts one


async def test_a_chunk_split_across_batches_acks_the_offsets_between_its_halves() -> None:
    """A chunk's missing offsets are covered by its first-to-last range; when
    take() splits it, the offsets between the two halves belong to neither."""
    app, consumer, source = make_source()
    await offer(source, app, P0, 10, 15, 16)  # 11-14: compacted away, or an aborted transaction
    source.done(await take(source, 1))  # [10]
    source.done(await take(source, 10))  # [15, 16]
    await offer(source, app, P0, 17, 18)
    source.done(await take(source, 10))
    commits = [consumer.new_offset(P0) for _ in range(3)]
    assert commits[0] == 19, f"Faust's commits: {commits}, stuck after 10 (11-14 never acked)"


# --- BatchPublisher, against the session's broker -------------------------------------


async def new_topic(embedded: Embedded, partitions: int) -> str:
    name = f"batchtests-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(embedded.broker_url))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


@pytest.fixture
async def producer(embedded: Embedded) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(bootstrap_servers=bootstrap(embedded.broker_url), acks="all")
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def read_back(embedded: Embedded, topic: str, partitions: int, count: int) -> dict[tuple[int, int], Any]:
    """(partition, offset) → (key, value) of the first ``count`` records of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(embedded.broker_url), enable_auto_commit=False)
    await consumer.start()
    found: dict[tuple[int, int], Any] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + 10
        while len(found) < count and time.monotonic() < deadline:
            for tp_records in (await consumer.getmany(timeout_ms=200)).values():
                for r in tp_records:
                    found[r.partition, r.offset] = (r.key, r.value)
    finally:
        await consumer.stop()
    return found


class CountingProducer:
    """The producer, counting the record batches sent per partition."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.batches: Counter[tuple[str, int]] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.producer, name)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        self.batches[topic, partition] += 1
        return await self.producer.send_batch(batch, topic, partition=partition)


def assert_written_where_returned(
    messages: list[Message], written: list[tuple[int, int]], found: dict[tuple[int, int], Any]
) -> None:
    assert len(found) == len(messages) == len(set(written))
    for (_, key, value, _), place in zip(messages, written, strict=True):
        assert found[place] == (key, value), place


@pytest.mark.e2e
async def test_keyed_messages_go_where_aiokafka_puts_the_same_key(
    embedded: Embedded, producer: AIOKafkaProducer
) -> None:
    """Keys must map to partitions exactly as aiokafka's (and Java's) producer
    maps them, or a caller's messages could land out of order across partitions."""
    topic = await new_topic(embedded, 6)
    keys = [b"+3906%06d" % n for n in range(40)]
    messages: list[Message] = [(topic, key, b"batch-" + key, None) for key in keys]
    written = await BatchPublisher(lambda: producer)(messages)
    expected = [(await (await producer.send(topic, b"send-" + key, key=key))).partition for key in keys]
    assert [partition for partition, _ in written] == expected
    assert len(set(expected)) > 1  # the keys do spread: the check means something
    found = await read_back(embedded, topic, 6, 2 * len(keys))
    for (_, key, value, _), place in zip(messages, written, strict=True):
        assert found[place] == (key, value)


@pytest.mark.e2e
async def test_explicit_partitions_are_honoured_and_offsets_returned_in_order(
    embedded: Embedded, producer: AIOKafkaProducer
) -> None:
    """The guard chains audit records per partition and keeps each record's
    offset: every (partition, offset) returned must be where that message is."""
    topic, other = await new_topic(embedded, 3), await new_topic(embedded, 2)
    messages: list[Message] = [
        (topic, b"k1", b"m0", 2),
        (other, None, b"m1", 1),
        (topic, b"k1", b"m2", 0),  # the same key on other partitions: the partition given wins
        (topic, None, b"m3", 2),
        (topic, b"k2", b"m4", None),
        (other, b"k3", b"m5", 0),
        (topic, b"k1", b"m6", 1),
        (topic, None, b"m7", 2),
    ]
    publish = BatchPublisher(lambda: producer)
    first = await publish(messages)
    assert [first[i][0] for i in (0, 1, 2, 3, 5, 6, 7)] == [2, 1, 0, 2, 0, 1, 2]
    second = await publish(messages)  # each partition's offsets go on where the first call left them
    per_partition = Counter((t, partition) for (t, *_), (partition, _) in zip(messages, first, strict=True))
    assert second == [
        (partition, offset + per_partition[t, partition])
        for (t, *_), (partition, offset) in zip(messages, first, strict=True)
    ]
    in_topic = [i for i, m in enumerate(messages) if m[0] == topic]
    in_other = [i for i, m in enumerate(messages) if m[0] == other]
    for indexes, name, partitions in ((in_topic, topic, 3), (in_other, other, 2)):
        chosen = [messages[i] for i in indexes] * 2
        found = await read_back(embedded, name, partitions, len(chosen))
        assert_written_where_returned(chosen, [first[i] for i in indexes] + [second[i] for i in indexes], found)


@pytest.mark.e2e
async def test_a_batch_bigger_than_one_record_batch_is_split_with_every_offset_right(
    embedded: Embedded, producer: AIOKafkaProducer
) -> None:
    """Past the producer's batch size a partition's messages go in several
    record batches; each message's offset is its batch's base plus its place."""
    topic = await new_topic(embedded, 2)
    small: list[Message] = [(topic, None, b"s%04d" % n + b"." * 300, n % 2) for n in range(400)]
    large: list[Message] = [(topic, b"L%d" % n, b"%d" % n + b"#" * 9000, n % 2) for n in range(6)]
    messages = small[:200] + large + small[200:]
    counting = CountingProducer(producer)
    written = await BatchPublisher(lambda: counting)(messages)
    assert counting.batches[topic, 0] > 3 and counting.batches[topic, 1] > 3  # really split
    assert [partition for partition, _ in written] == [m[3] for m in messages]
    for partition in (0, 1):  # in order, no offset skipped or repeated
        offsets = [offset for p, offset in written if p == partition]
        assert offsets == list(range(len(offsets)))
    assert_written_where_returned(messages, written, await read_back(embedded, topic, 2, len(messages)))


@pytest.mark.e2e
@pytest.mark.parametrize("before", [0, 1], ids=["alone", "after-another"])
async def test_a_single_message_too_large_for_a_batch_is_refused(
    embedded: Embedded, producer: AIOKafkaProducer, before: int
) -> None:
    """``producer.send()`` refuses a message over max_request_size before it
    reaches the broker; the publisher's own checks mean to refuse what no
    record batch can hold, whether it comes first or after others; nothing
    of the call is sent."""
    topic = await new_topic(embedded, 1)
    too_large = b"x" * (1024 * 1024 + 1)  # over the batch size and over aiokafka's max_request_size
    with pytest.raises(MessageSizeTooLargeError):
        await producer.send(topic, too_large)  # aiokafka's own rule
    fits: Message = (topic, None, b"fits", 0)
    messages: list[Message] = [fits] * before + [(topic, None, too_large, 0)]
    with pytest.raises(MessageSizeTooLargeError):
        await BatchPublisher(lambda: producer)(messages)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap(embedded.broker_url))
    await reader.start()
    try:
        partition = TopicPartition(topic, 0)
        assert (await reader.end_offsets([partition]))[partition] == 0  # not even the message that fits
    finally:
        await reader.stop()
