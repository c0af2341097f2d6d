"""Consumer lag of the workers' group, for people (``callguard lag``) and for ``/metrics``.

Only standard Kafka requests, so it works on Apache Kafka and on the embedded
broker alike: OffsetFetch for the group's committed offsets (with explicit
partitions), ListOffsets for the end offsets, and one Fetch per lagging
partition to read the timestamp of the oldest intent not yet committed.

- **lag** (offsets) = end offset − committed offset (before any commit, the
  partition's first offset stands for the committed one: the group starts
  from the earliest intent);
- **lag seconds** = now − the record timestamp of the intent at the committed
  offset, i.e. how long the oldest waiting intent has waited (the timestamp is
  the producer's CreateTime, so a dialer with a wrong clock skews it); 0 when
  the lag is 0;
- **status**, Burrow-style, over a sliding window of samples of the committed
  offsets (Kafka's OffsetFetch does not say when a commit happened, so the
  window is of observations, taken every ``--interval``):

  ``OK``    the lag was 0 somewhere in the window, or the group commits and the lag is not growing;
  ``WARN``  the group commits, but the lag grew at every sample of the window;
  ``STALL`` the lag is not 0 and the committed offset did not move in the window,
            while the group still has members (a worker is stuck);
  ``STOP``  the same, and the group has no members (every worker is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

STATUSES = ("OK", "WARN", "STALL", "STOP")


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One observation of one partition."""

    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int
    start: int
    lag: int
    lag_seconds: float | None  # None: could not read the oldest waiting intent in time
    at: float  # time.time() of the observation


@dataclass(frozen=True, slots=True)
class Sample:
    """Every partition of the topic at one moment, and the group's state."""

    at: float
    group_state: str  # e.g. Stable, Empty, Dead, PreparingRebalance; "unknown" if not described
    members: int | None
    partitions: tuple[PartitionLag, ...]


class LagProbe:
    """Kafka clients kept open between samples (one admin, one group-less consumer)."""

    def __init__(
        self,
        bootstrap: list[str],
        group: str,
        topic: str,
        request_timeout: float = 10.0,
        security: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security or {}
        self.group = group
        self.topic = topic
        self.timeout_ms = int(request_timeout * 1000)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def admin(self) -> AIOKafkaAdminClient:
        assert self._admin is not None, "LagProbe.start() first"
        return self._admin

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "LagProbe.start() first"
        return self._consumer

    async def start(self) -> None:
        """Connect (clients are made here: aiokafka needs the running loop)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=self.timeout_ms, **self.security
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                **self.security,
                enable_auto_commit=False,
                request_timeout_ms=self.timeout_ms,
                max_partition_fetch_bytes=64 * 1024,
                fetch_max_wait_ms=100,
            )
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await admin.close()
                raise
            self._admin, self._consumer = admin, consumer

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def partitions(self) -> list[TopicPartition]:
        # a Metadata request naming a missing topic may make the broker create it
        # with its own defaults: name it only once it exists (the worker creates it)
        if self.topic not in await self.admin.list_topics():
            return []
        described = await self.admin.describe_topics([self.topic])
        found = {p["partition"] for t in described if t.get("error_code", 0) == 0 for p in t.get("partitions", ())}
        return [TopicPartition(self.topic, p) for p in sorted(found)]

    async def sample(self, only: Iterable[int] | None = None, describe: bool = True) -> Sample:
        """Observe the group's lag now, on every partition (or those in ``only``)."""
        await self.start()
        tps = await self.partitions()
        if only is not None:
            wanted = set(only)
            tps = [tp for tp in tps if tp.partition in wanted]
        if not tps:
            return Sample(time.time(), "unknown", None, ())
        committed = await self.admin.list_consumer_group_offsets(self.group, partitions=tps)
        ends = await self.consumer.end_offsets(tps)
        starts = await self.consumer.beginning_offsets(tps)
        now = time.time()
        rows: dict[TopicPartition, tuple[int | None, int, int]] = {}
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            rows[tp] = (offset, ends[tp], starts[tp])
        lagging = {tp: (c if c is not None else s) for tp, (c, e, s) in rows.items() if (c if c is not None else s) < e}
        stamps, highwaters = await self._oldest_timestamps(lagging)
        # The fetch's high watermark is the end offset too; some brokers (the
        # embedded Tansu) answer ListOffsets with the last batch's first offset + 1,
        # so take the larger of the two.
        for tp, highwater in highwaters.items():
            offset, end, start = rows[tp]
            rows[tp] = (offset, max(end, highwater), start)
        state, members = await self._describe() if describe else ("unknown", None)
        out = []
        for tp, (offset, end, start) in rows.items():
            base = offset if offset is not None else start
            lag = max(end - base, 0)
            stamp = stamps.get(tp)
            seconds = 0.0 if lag == 0 else (None if stamp is None else max(now - stamp, 0.0))
            out.append(PartitionLag(tp.topic, tp.partition, offset, end, start, lag, seconds, now))
        return Sample(now, state, members, tuple(out))

    async def _oldest_timestamps(
        self, positions: dict[TopicPartition, int], timeout: float = 2.0
    ) -> tuple[dict[TopicPartition, float], dict[TopicPartition, int]]:
        """Timestamp (seconds) of the record at each position, read with one
        fetch, and the high watermarks the fetch reported."""
        if not positions:
            return {}, {}
        self.consumer.assign(list(positions))
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)
        found: dict[TopicPartition, float] = {}
        highwaters: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(positions) and time.monotonic() < deadline:
            pending = [tp for tp in positions if tp not in found]
            batches = await self.consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                if records and tp not in found:
                    found[tp] = records[0].timestamp / 1000.0
                    highwater = self.consumer.highwater(tp)
                    if highwater is not None:
                        highwaters[tp] = int(highwater)
                    self.consumer.pause(tp)
        self.consumer.resume(*positions)
        self.consumer.unsubscribe()
        return found, highwaters

    async def _describe(self) -> tuple[str, int | None]:
        try:
            responses = await self.admin.describe_consumer_groups([self.group])
            group = responses[0].groups[0]
            return str(group[2]) or "unknown", len(group[5])
        except Exception:  # not every broker describes groups; status then relies on offsets alone
            return "unknown", None


def status(window: Sequence[PartitionLag], group_state: str = "unknown", members: int | None = None) -> str:
    """Burrow-style status of one partition over a window of observations (oldest first)."""
    if not window:
        return "OK"
    if any(p.lag == 0 for p in window):
        return "OK"
    if len(window) < 2:
        return "OK"
    offsets = [p.committed for p in window]
    if all(o == offsets[0] for o in offsets):
        gone = members == 0 or group_state in ("Empty", "Dead")
        return "STOP" if gone else "STALL"
    lags = [p.lag for p in window]
    if all(b >= a for a, b in itertools.pairwise(lags)) and lags[-1] > lags[0]:
        return "WARN"
    return "OK"


@dataclass
class SampleWindow:
    """The last ``size`` samples, per partition."""

    size: int
    samples: deque[Sample] = field(default_factory=deque)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        while len(self.samples) > self.size:
            self.samples.popleft()

    def report(self) -> list[dict[str, Any]]:
        """One row per partition of the latest sample, with its status over the window."""
        if not self.samples:
            return []
        latest = self.samples[-1]
        rows = []
        for current in latest.partitions:
            history = [
                p
                for s in self.samples
                for p in s.partitions
                if p.topic == current.topic and p.partition == current.partition
            ]
            rows.append(
                {
                    "topic": current.topic,
                    "partition": current.partition,
                    "committed": current.committed,
                    "end": current.end,
                    "lag": current.lag,
                    "lag_seconds": None if current.lag_seconds is None else round(current.lag_seconds, 3),
                    "status": status(history, latest.group_state, latest.members),
                }
            )
        return rows


def overall(rows: Sequence[dict[str, Any]]) -> str:
    """The worst partition status."""
    return max((row["status"] for row in rows), key=STATUSES.index, default="OK")


def format_table(group: str, sample: Sample, rows: Sequence[dict[str, Any]]) -> str:
    members = "?" if sample.members is None else str(sample.members)
    total = sum(row["lag"] for row in rows)
    oldest = max((row["lag_seconds"] or 0.0 for row in rows), default=0.0)
    lines = [
        f"group {group}: {overall(rows)}, lag {total:,} intents, oldest waiting {oldest:.1f}s "
        f"(state {sample.group_state}, {members} members)",
        f"{'topic':<20} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10} {'lag_s':>9}  status",
    ]
    for row in rows:
        committed = "-" if row["committed"] is None else f"{row['committed']:,}"
        seconds = "?" if row["lag_seconds"] is None else f"{row['lag_seconds']:.1f}"
        lines.append(
            f"{row['topic']:<20} {row['partition']:>9} {committed:>12} {row['end']:>12,} {row['lag']:>10,} "
            f"{seconds:>9}  {row['status']}"
        )
    return "\n".join(lines)


async def watch(
    probe: LagProbe, interval: float, window: int, samples: int | None
) -> AsyncIterator[tuple[Sample, list[dict[str, Any]]]]:
    """Yield (sample, rows) every ``interval`` seconds; stop after ``samples`` when given."""
    history = SampleWindow(window)
    taken = 0
    while samples is None or taken < samples:
        if taken:
            await asyncio.sleep(interval)
        sample = await probe.sample()
        history.add(sample)
        taken += 1
        yield sample, history.report()
