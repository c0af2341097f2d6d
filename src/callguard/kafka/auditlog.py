"""Reading ``callguard.audit`` back: a partition's records in order, and its
last record (where a worker's chain continues). The chain itself is pure and
lives in :mod:`callguard.core.audit`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from callguard.core.audit import Stored


async def read_partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int | None = None
) -> AsyncIterator[Stored]:
    """Every record of ``tp`` from ``start`` (default: the beginning) to the
    high watermark as of the first fetch (for a ``read_committed`` consumer,
    the last stable offset: records past it belong to transactions still
    open). Both come from fetch responses, which every Kafka-protocol broker
    reports correctly."""
    consumer.assign([tp])
    if start is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, start)
    end: int | None = None
    empty_fetches = 0
    while True:
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
        records = batches.get(tp, [])
        if end is None:
            end = consumer.highwater(tp)
            stable = consumer.last_stable_offset(tp) if consumer._isolation_level == "read_committed" else None
            if end is not None and stable is not None and 0 <= stable < end:
                end = stable
        for record in records:
            if end is not None and record.offset >= end:
                return
            yield Stored(tp.partition, record.offset, record.value or b"")
        if end is not None and await consumer.position(tp) >= end:
            return
        empty_fetches = 0 if records else empty_fetches + 1
        if empty_fetches >= 10:  # nothing for 10 s: the broker is not answering
            raise TimeoutError(f"no records from {tp.topic}[{tp.partition}] for 10 s")


async def last_record(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bytes | None:
    """The value of the last record of ``tp``, or None when it is empty. Starts
    one before the reported end offset and reads on to the high watermark
    (some brokers report a batch's base offset as the end). Where the last
    offsets hold no record a consumer returns (a transaction's commit or
    abort marker, an aborted transaction's records), it starts again further
    back, twice as far each time; it starts two back, since the last offset
    of a partition written by transactions is a marker."""
    end = (await consumer.end_offsets([tp]))[tp]
    if end == 0:
        return None
    back = 2
    while True:
        start = max(end - back, 0)
        last: bytes | None = None
        async for stored in read_partition(consumer, tp, start=start):
            last = stored.value
        if last is not None or start == 0:
            return last
        back *= 2
