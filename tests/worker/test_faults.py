"""Faults: the guard fails closed when Redis is gone and recovers when it returns.

This module starts its own broker and Redis (the session's are shared by the
other tests, and stopping them would break those): a worker whose Redis is
down answers every intent on the broker it consumes, with a deny.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import redis.asyncio
from aiokafka import AIOKafkaProducer

from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, start_redis
from tests.conftest import Worker, bootstrap, cli, collect, env_for, produce, start_test_broker, today, write_csv

pytestmark = pytest.mark.e2e

NUMBER = "+393491110001"


def load_data(env: dict[str, str], directory: Path) -> None:
    ops = write_csv(
        directory / "ops.csv", "operator_id,status,valid_from,valid_until", ["f-op,active,2024-01-01,2030-01-01"]
    )
    reg = write_csv(directory / "reg.csv", "number,status", [f"{NUMBER},clear"])
    # the intents are acme's: a clear result loaded for every client ('*') is nobody's check
    register = ("register", "load", str(reg), "--as-of", today(), "--client", "acme")
    for argv in (("operators", "load", str(ops)), register):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    broker = start_test_broker(tmp_path)
    redis_server = start_redis(tmp_path)
    env = env_for(f"kafka://127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis_server.port}/0",
                  CALLGUARD_REDIS_TIMEOUT="0.5", CALLGUARD_APP_ID="callguard-faults")  # fmt: skip
    try:
        yield broker, redis_server, env
    finally:
        redis_server.stop()
        broker.stop()


def intent(intent_id: str) -> bytes:
    return orjson.dumps({"intent_id": intent_id, "callee": NUMBER, "operator_id": "f-op", "client_id": "acme"})


async def decide(broker_url: str, *ids: str) -> dict[str, dict]:
    await produce(broker_url, INTENTS_TOPIC, [intent(i) for i in ids])
    found = await collect(broker_url, DECISIONS_TOPIC, set(ids), timeout=30)
    assert set(found) == set(ids)
    return {k: v[0] for k, v in found.items()}


async def test_redis_down_denies_lookup_unavailable_and_recovers(isolated, tmp_path: Path) -> None:
    _, redis_server, env = isolated
    broker_url = env["CALLGUARD_BROKER"]
    load_data(env, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        assert (await decide(broker_url, "f-before"))["f-before"]["decision"] == "allow"

        redis_server.stop()
        down = await decide(broker_url, *(f"f-down-{n}" for n in range(20)))
        assert all(d["decision"] == "deny" for d in down.values()), "allowed while Redis was down"
        assert all(d["reasons"] == ["lookup_unavailable"] and d["retryable"] is True for d in down.values())
        status, body = worker.health()
        assert status == 503 and body["redis"] == "unreachable"

        # Redis returns (empty: it keeps nothing on disk); the data is loaded again
        restarted = start_redis(tmp_path, port=redis_server.port)
        try:
            load_data(env, tmp_path)
            started = time.monotonic()
            after = (await decide(broker_url, "f-after"))["f-after"]
            assert after["decision"] == "allow" and after["reasons"] == []
            assert time.monotonic() - started < 15
            worker.wait_healthy(timeout=10)
        finally:
            restarted.stop()
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert "lookup_unavailable" in log
    assert NUMBER not in log and NUMBER[1:] not in log


async def steady_load(broker_url: str, prefix: str, seconds: float, rate: int) -> list[tuple[str, float]]:
    """Publish intents at about ``rate``/s for ``seconds``; returns (intent_id, sent_at)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), linger_ms=2)
    await producer.start()
    sent: list[tuple[str, float]] = []
    try:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            for _ in range(max(1, int(rate * elapsed) - len(sent))):
                intent_id = f"{prefix}-{len(sent)}"
                await producer.send(INTENTS_TOPIC, intent(intent_id))
                sent.append((intent_id, time.time()))
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def test_redis_frozen_under_load_gives_no_allow_and_drops_nothing(isolated, tmp_path: Path) -> None:
    """Redis frozen (SIGSTOP) for 10 s while 200 intents/s arrive: every intent
    decided while it is frozen is a retryable lookup_unavailable deny, nothing
    is dropped, and allows resume within seconds of its return."""
    _, redis_server, env = isolated
    broker_url = env["CALLGUARD_BROKER"]
    load_data(env, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        load = asyncio.create_task(steady_load(broker_url, "frz", seconds=18, rate=200))
        await asyncio.sleep(4)
        frozen_at = time.time()
        redis_server.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(10)
        redis_server.process.send_signal(signal.SIGCONT)
        thawed_at = time.time()
        sent = await load
        found = await collect(broker_url, DECISIONS_TOPIC, {i for i, _ in sent}, timeout=60)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        worker.stop()
    decisions = {k: v[0] for k, v in found.items()}
    missing = len(sent) - len(decisions)

    def decided(d: dict) -> float:
        return datetime.fromisoformat(d["decided_at"].replace("Z", "+00:00")).timestamp()

    # decided_at is when a batch's decision began; a batch that began less than one
    # Redis timeout (0.5 s) before the thaw may rightly have read Redis after it
    during = [d for d in decisions.values() if frozen_at + 0.1 < decided(d) < thawed_at - 0.6]
    allowed_during = [d for d in during if d["decision"] == "allow"]
    first_allow_after = min(
        decided(d) for d in decisions.values() if decided(d) > thawed_at and d["decision"] == "allow"
    )
    print(
        f"\nRedis frozen 10 s under {len(sent) / 18:.0f} intents/s: {len(sent)} sent, {missing} missing, "
        f"{len(during)} decided while frozen ({len(allowed_during)} allowed), "
        f"first allow {first_allow_after - thawed_at:.1f}s after the thaw"
    )
    assert missing == 0
    assert during, "no intent was decided while Redis was frozen: the stream stalled"
    assert allowed_during == []
    assert all(d["reasons"] == ["lookup_unavailable"] and d["retryable"] for d in during)
    assert first_allow_after - thawed_at < 5


async def test_slow_redis_turns_into_denies_not_a_stalled_stream(isolated, tmp_path: Path) -> None:
    """A Redis busy for 3 s (a long script) answers nothing: lookups time out
    after CALLGUARD_REDIS_TIMEOUT (0.5 s) and intents are denied at once."""
    _, redis_server, env = isolated
    broker_url = env["CALLGUARD_BROKER"]
    load_data(env, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    blocker = redis.asyncio.Redis(port=redis_server.port)
    busy_loop = (
        "local t = redis.call('TIME') local s = t[1] + 3 while tonumber(redis.call('TIME')[1]) < s do end return 1"
    )
    try:
        assert (await decide(broker_url, "slow-before"))["slow-before"]["decision"] == "allow"
        busy = asyncio.create_task(blocker.eval(busy_loop, 0))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        slow = (await decide(broker_url, "slow-during"))["slow-during"]
        elapsed = time.monotonic() - started
        await busy
        assert slow["reasons"] == ["lookup_unavailable"] and slow["retryable"] is True
        assert elapsed < 2.5, f"the decision waited {elapsed:.1f}s for a busy Redis"
        assert (await decide(broker_url, "slow-after"))["slow-after"]["decision"] == "allow"
    finally:
        await blocker.aclose()
        worker.stop()


async def test_worker_against_a_redis_that_requires_a_password(tmp_path: Path) -> None:
    """Credentials travel in CALLGUARD_REDIS_URL (environment, not the command
    line) and never appear in logs or error messages."""
    broker = start_test_broker(tmp_path)
    secret = "s3cret-Pa55word"
    redis_server = start_redis(tmp_path, password=secret)
    env = env_for(f"kafka://127.0.0.1:{broker.port}", f"redis://:{secret}@127.0.0.1:{redis_server.port}/0",
                  CALLGUARD_APP_ID="callguard-auth")  # fmt: skip
    worker = None
    try:
        load_data(env, tmp_path)
        denied = cli({**env, "CALLGUARD_REDIS_URL": f"redis://:wrong@127.0.0.1:{redis_server.port}/0"}, "status")
        assert denied.returncode == 1 and "redis://:***@" in denied.stderr and "wrong" not in denied.stderr
        worker = Worker(env, tmp_path / "worker.log").start()
        decision = (await decide(env["CALLGUARD_BROKER"], "auth-1"))["auth-1"]
        assert decision["decision"] == "allow"
    finally:
        if worker is not None:
            worker.stop()
        redis_server.stop()
        broker.stop()
    assert secret not in (tmp_path / "worker.log").read_text()


async def test_broker_frozen_under_load_loses_no_intent(isolated, tmp_path: Path) -> None:
    """The broker stops answering for 10 s (SIGSTOP: its memory storage would
    not survive a real restart) while intents arrive: the worker reconnects
    and every intent is decided."""
    broker, _, env = isolated
    broker_url = env["CALLGUARD_BROKER"]
    load_data(env, tmp_path)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        load = asyncio.create_task(steady_load(broker_url, "brk", seconds=16, rate=100))
        await asyncio.sleep(3)
        broker.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(10)
        broker.process.send_signal(signal.SIGCONT)
        sent = await load
        found = await collect(broker_url, DECISIONS_TOPIC, {i for i, _ in sent}, timeout=90)
    finally:
        broker.process.send_signal(signal.SIGCONT)
        worker.stop()
    missing = len(sent) - len(found)
    print(f"\nbroker frozen 10 s under load: {len(sent)} intents sent, {missing} without a decision")
    assert missing == 0, worker.log_tail()
    assert all(v[0]["decision"] == "allow" for v in found.values())
