"""Faults: the guard fails closed when Redis is gone and recovers when it returns.

This module starts its own broker and Redis (the session's are shared by the
other tests, and stopping them would break those): a worker whose Redis is
down answers every intent on the broker it consumes, with a deny.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from callguard.embedded import Server, start_broker, start_redis
from callguard.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from tests.conftest import Worker, cli, collect, env_for, produce, today, write_csv

pytestmark = pytest.mark.e2e

NUMBER = "+393491110001"


def load_data(env: dict[str, str], directory: Path) -> None:
    ops = write_csv(
        directory / "ops.csv", "operator_id,status,valid_from,valid_until", ["f-op,active,2024-01-01,2030-01-01"]
    )
    reg = write_csv(directory / "reg.csv", "number,status", [f"{NUMBER},clear"])
    for argv in (("operators", "load", str(ops)), ("register", "load", str(reg), "--as-of", today())):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    broker = start_broker(tmp_path)
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
