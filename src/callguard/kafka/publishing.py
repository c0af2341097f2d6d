"""Publish a guard's output as one record batch per partition.

``producer.send()`` per message costs a future, a metadata wait, a partition
lookup and a linger per message; the guard sends two messages per intent and
waits for all of them anyway. :class:`BatchPublisher` instead groups a
batch's messages by topic and partition (keyed messages go where Kafka's
default partitioner puts them: murmur2 of the key, as the Java client and
aiokafka do), fills one closed ``BatchBuilder`` per partition (a closed batch
does not linger) and waits for one future per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

#: topic, key, value, partition (None: by key)
Message = tuple[str, bytes | None, bytes, int | None]


class BatchPublisher:
    """``await publisher(messages)``: where each message was written, in
    order, as (partition, offset), once the broker acknowledged them all;
    raises the first failure after every batch sent has settled."""

    def __init__(self, producer: Callable[[], Any]) -> None:
        self.producer = producer  # the started AIOKafkaProducer (Faust's)
        self.partitioner = DefaultPartitioner()

    async def __call__(self, messages: Sequence[Message]) -> list[tuple[int, int]]:
        producer = self.producer()
        groups: dict[tuple[str, int], list[int]] = {}
        partitions: dict[str, list[int]] = {}
        for index, (topic, key, _, partition) in enumerate(messages):
            if partition is None:
                known = partitions.get(topic)
                if known is None:
                    known = partitions[topic] = sorted(await producer.partitions_for(topic))
                partition = self.partitioner(key, known, known)
            groups.setdefault((topic, partition), []).append(index)
        # aiokafka's BatchBuilder takes any first record, whatever its size: refuse
        # what producer.send() would refuse (max_request_size) before anything is sent
        limit = getattr(producer, "_max_request_size", 1_048_576)
        for _, key, value, _ in messages:
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
            if size > limit:
                raise MessageSizeTooLargeError(f"a message of {size} bytes is over max_request_size ({limit})")
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        try:
            for (topic, partition), indexes in groups.items():
                batch, members = producer.create_batch(), list[int]()
                for index in indexes:
                    _, key, value, _ = messages[index]
                    if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                        batch.close()
                        sent.append((await producer.send_batch(batch, topic, partition=partition), members))
                        batch, members = producer.create_batch(), []
                        batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
                    members.append(index)
                batch.close()  # sent at once: nothing else joins it, no linger
                sent.append((await producer.send_batch(batch, topic, partition=partition), members))
        except BaseException:
            await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
            raise
        results: list[Any] = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        failed = next((result for result in results if isinstance(result, BaseException)), None)
        if failed is not None:
            raise failed
        written: list[tuple[int, int]] = [(0, 0)] * len(messages)
        for (_, members), metadata in zip(sent, results, strict=True):
            for relative, index in enumerate(members):
                written[index] = (metadata.partition, metadata.offset + relative)
        return written
