"""One way to wait and try again, for the shells' I/O that must not give up at once.

The guard's Redis writes of the live topics and its publishes retry for ever
(what arrived on a topic is never dropped: the offsets wait), the topic
creation at start (``callguard.kafka.topics``) until a deadline, the audit
sink's writes to PostgreSQL until it is stopped; each says what a failure
means in its ``failed``. No callguard import: every layer above the
core may use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits of ``first`` seconds, multiplied by ``factor`` after each failure, up to ``most``."""

    first: float
    most: float
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * self.factor, self.most)


#: Redis and the broker: quick at first (a leader moving, a failover), then every 5 s.
OUTAGE = Backoff(0.1, 5.0)


async def retry(
    attempt: Callable[[], Awaitable[T]],
    failed: Callable[[Exception, float], None],
    backoff: Backoff = OUTAGE,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await attempt()`` until it returns. After each failure that is one of
    ``retry_on`` (any other propagates), ``failed(exc, delay)`` logs and counts
    it, or raises to give up, and the next attempt waits ``delay`` seconds."""
    delays = backoff.delays()
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            delay = next(delays)
            failed(exc, delay)
        await sleep(delay)
