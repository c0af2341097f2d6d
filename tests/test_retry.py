"""The shells' one retry helper (``callguard.retry``), and the places that
use it keeping their waits: the guard's Redis writes and publishes 0.1 s
doubling up to 5 s, for ever; topic creation at start every second until its
deadline; the audit sink's PostgreSQL 1 s doubling up to 30 s, until stopped
(its outage is tested in ``tests/auditstore``)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from callguard.auditstore.store import POSTGRES_OUTAGE
from callguard.config import Settings
from callguard.kafka.topics import BrokerUnavailable, ensure_topics
from callguard.retry import OUTAGE, Backoff, retry


class Flaky:
    """Fails ``failures`` times with ``error``, then answers ``"done"``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.attempts = failures, error, 0

    async def __call__(self) -> str:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        return "done"


async def test_it_waits_0_1_s_doubling_up_to_5_s_until_the_attempt_answers() -> None:
    waits: list[float] = []
    told: list[tuple[str, float]] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    attempt = Flaky(8, OSError("refused"))
    result = await retry(attempt, lambda exc, delay: told.append((str(exc), delay)), sleep=sleep)
    assert result == "done" and attempt.attempts == 9
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert told == [("refused", wait) for wait in waits]  # told before each wait, with it


async def test_a_success_at_once_waits_for_nothing() -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("waited")

    assert await retry(Flaky(0, OSError()), lambda exc, delay: None, sleep=sleep) == "done"


async def test_only_the_named_errors_are_retried_and_failed_can_give_up() -> None:
    async def sleep(seconds: float) -> None:
        return None

    with pytest.raises(ValueError):  # not one of retry_on: at once
        await retry(Flaky(1, ValueError("bug")), lambda exc, delay: None, retry_on=(OSError,), sleep=sleep)

    def give_up(exc: Exception, delay: float) -> None:
        raise TimeoutError("gave up") from exc

    attempt = Flaky(5, OSError())
    with pytest.raises(TimeoutError):
        await retry(attempt, give_up, sleep=sleep)
    assert attempt.attempts == 1


def test_the_backoffs() -> None:
    delays = OUTAGE.delays()
    assert [next(delays) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    postgres = POSTGRES_OUTAGE.delays()
    assert [next(postgres) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    steady = Backoff(1.0, 1.0).delays()
    assert [next(steady) for _ in range(3)] == [1.0, 1.0, 1.0]


async def test_topic_creation_gives_up_at_its_deadline_on_a_broker_that_is_not_there() -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BrokerUnavailable, match=f"cannot reach the broker at kafka://127.0.0.1:{port}"):
        await asyncio.wait_for(ensure_topics(Settings(broker=f"kafka://127.0.0.1:{port}"), wait=0.0), 10)
