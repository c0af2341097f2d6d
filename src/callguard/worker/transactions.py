"""Exactly-once decisions (``CALLGUARD_PROCESSING_GUARANTEE=exactly_once``).

A batch of intents is decided in one Kafka transaction per input partition:
its decisions, audit records and dead letters, and the partition's next
offset for the workers' group (``send_offsets_to_transaction``), commit
together or not at all. A ``read_committed`` consumer of the output topics
then never sees a decision twice, even after a worker was killed mid-batch:
what the dead worker had written is aborted, and its intents are read again
from the offset committed with the last transaction.

Each input partition has a transactional producer of its own,
``transactional.id = <group>-callguard.intents-<partition>``: the worker that
takes a partition over starts its producer with that id, which fences the
previous owner (a zombie that still writes gets ``ProducerFenced``) and
aborts the transaction it left open. aiokafka's ``TxnOffsetCommit`` carries no
group generation (KIP-447), so this per-partition id is what fences. Producers
are made again after every rebalance (lazily, at the partition's first batch).

Faust stays at-least-once underneath: the batch is acked to Faust's consumer
only after its transaction committed, so Faust's own offset commits only ever
repeat offsets a transaction committed. Redis updates (the record of allowed
calls for frequency caps) are not part of the transaction: a batch read again
after an abort records its allowed calls again, as with at-least-once.

A send or commit that fails inside a transaction stops the process (the
at-least-once path retries the batch instead): the transaction cannot be
trusted, and the restarted worker (or another one) aborts it and decides the
batch again.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from callguard.core.schema import INTENTS_TOPIC
from callguard.kafka.publishing import BatchPublisher, Message
from callguard.worker.batching import Batch, Chunk, _raws
from callguard.worker.guard import Raw

log = logging.getLogger("callguard.transactions")

#: The transactional producer of the partition whose batch is being decided
#: in this task (None elsewhere: opt-outs and outcomes publish outside transactions).
CURRENT: contextvars.ContextVar[AIOKafkaProducer | None] = contextvars.ContextVar("callguard_txn", default=None)


def transactional_id(group: str, partition: int) -> str:
    return f"{group}-{INTENTS_TOPIC}-{partition}"


def _fatal(what: str, exc: BaseException) -> None:
    log.critical(
        "%s failed inside a transaction (%s: %s); exiting: it is aborted and decided again",
        what,
        type(exc).__name__,
        exc,
    )
    logging.shutdown()
    os._exit(70)


class Transactions:
    """The exactly-once path of the ``decide`` agent."""

    def __init__(
        self,
        hosts: list[str],
        group: str,
        handle: Callable[[Sequence[Raw]], Awaitable[Any]],
        generation: Callable[[], int],
        forget: Callable[[], None],
        options: dict[str, Any],
        audit_partitions: int,
    ) -> None:
        self.hosts = hosts
        self.group = group
        self.handle = handle  # Guard.handle_intents
        self.generation = generation  # the consumer group's current generation
        self.forget = forget  # Guard.chain.forget: after an abort, reload the chains' heads
        self.options = options  # producer settings and kafka_security
        self.audit_partitions = audit_partitions  # the guard's: an intent partition's audit partition is p % this
        self.producers: dict[int, tuple[int, AIOKafkaProducer]] = {}
        self.publisher = BatchPublisher(self._current)
        self.committed = 0
        self.aborted = 0

    @staticmethod
    def _current() -> AIOKafkaProducer:
        producer = CURRENT.get()
        assert producer is not None
        return producer

    def sender(self, plain: Callable[[Sequence[Message]], Awaitable[list[tuple[int, int]]]]) -> Any:
        """The guard's ``send``: inside a transaction through its producer, elsewhere ``plain``."""

        async def send(messages: Sequence[Message]) -> list[tuple[int, int]]:
            if CURRENT.get() is None:
                return await plain(messages)
            try:
                return await self.publisher(messages)
            except Exception as exc:
                _fatal("publishing a batch", exc)
                raise  # not reached

        return send

    async def producer(self, partition: int, generation: int) -> AIOKafkaProducer:
        """The partition's transactional producer, made for this group generation."""
        held = self.producers.pop(partition, None)
        if held is not None:
            if held[0] == generation:
                self.producers[partition] = held
                return held[1]
            await held[1].stop()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.hosts, transactional_id=transactional_id(self.group, partition), **self.options
        )
        await producer.start()  # InitProducerId: fences an earlier owner, aborts what it left open
        self.producers[partition] = (generation, producer)
        return producer

    async def decide(self, batch: Batch) -> None:
        """Decide ``batch``, one transaction per input partition, each with its
        offsets. Partitions whose audit records go to different audit
        partitions are decided concurrently (a transaction is several round
        trips); those sharing an audit partition one after the other, so that
        its hash chain is extended by one of them at a time."""
        by_partition: dict[Any, list[Chunk]] = {}
        for chunk in batch.chunks:
            by_partition.setdefault(chunk.tp, []).append(chunk)
        lanes: dict[int, list[tuple[Any, list[Chunk]]]] = {}
        for tp, chunks in by_partition.items():
            lanes.setdefault(tp.partition % self.audit_partitions, []).append((tp, chunks))
        await asyncio.gather(*(self._decide_lane(lane, batch.generation) for lane in lanes.values()))

    async def _decide_lane(self, lane: list[tuple[Any, list[Chunk]]], generation: int) -> None:
        for tp, chunks in lane:
            producer = await self.producer(tp.partition, generation)
            await producer.begin_transaction()
            token = CURRENT.set(producer)
            try:
                await self.handle(_raws(chunks))
            finally:
                CURRENT.reset(token)
            try:
                if self.generation() != generation:  # the partition may be another worker's by now
                    await producer.abort_transaction()
                    self.forget()
                    self.aborted += 1
                    log.info("a batch outlived its group generation: its transaction is aborted, read again")
                    continue
                offsets = {TopicPartition(tp.topic, tp.partition): max(chunk.last for chunk in chunks) + 1}
                await producer.send_offsets_to_transaction(offsets, self.group)
                await producer.commit_transaction()
                self.committed += 1
            except Exception as exc:
                _fatal("committing a batch", exc)

    async def close(self) -> None:
        for _, producer in self.producers.values():
            await producer.stop()
        self.producers.clear()
