"""Shared fixtures: one broker and one Redis for the session, worker processes on demand.

Everything runs on loopback ports picked at random; nothing here touches a
broker or Redis the tests did not start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from callguard.dev.embedded import (
    BROKERS,
    Embedded,
    Server,
    free_port,
    kafka_libs,
    kafka_unavailable,
    start_broker,
    start_kafka,
    start_postgres,
)
from tests.paths import POLICIES

ROME = ZoneInfo("Europe/Rome")


def today() -> str:
    return datetime.now(ROME).date().isoformat()


# --- the broker the tests run on ---------------------------------------------------
# CALLGUARD_TEST_BROKER=kafka|tansu; by default Apache Kafka where Java and the jars
# `./dev test` fetched are here, else Tansu (the header says why). The demo's own
# test (test_demo.py) runs on Tansu whatever this says: the demo does.

_broker: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    wanted = os.environ.get("CALLGUARD_TEST_BROKER", "")
    if wanted and wanted not in BROKERS:
        raise pytest.UsageError(f"CALLGUARD_TEST_BROKER={wanted}: expected one of {', '.join(BROKERS)}")
    reason = None if wanted == "tansu" else kafka_unavailable()
    if wanted == "kafka" and reason:
        raise pytest.UsageError(f"CALLGUARD_TEST_BROKER=kafka, but {reason}")
    if wanted == "tansu":
        reason = "CALLGUARD_TEST_BROKER=tansu"
    _broker["kind"] = "tansu" if reason else "kafka"
    _broker["why"] = f"Tansu ({reason})" if reason else f"Apache Kafka ({kafka_libs()})"


#: A test that uses one of these fixtures, or lives in a module that imports
#: one of these starters, talks to real servers: it is marked ``e2e``, and
#: ``./dev test --fast`` leaves it out.
SERVER_FIXTURES = frozenset({"embedded"})
SERVER_STARTERS = frozenset(
    {
        "start_broker",
        "start_kafka",
        "start_test_broker",
        "start_redis",
        "start_redis_replica",
        "start_redis_cluster",
        "start_postgres",
        "start_kamailio",
        "Embedded",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        starters = SERVER_STARTERS & set(vars(module)) if module is not None else set()
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or starters:
            item.add_marker(pytest.mark.e2e)


def pytest_report_header(config: pytest.Config) -> str:
    return f"broker: {_broker['why']}"


def broker_kind() -> str:
    """``"kafka"`` or ``"tansu"``: the broker this session's tests run on."""
    return _broker["kind"]


def start_test_broker(workdir: Path) -> Server:
    """A broker of a test's own (files in ``workdir``), of the session's kind."""
    return start_kafka(workdir) if broker_kind() == "kafka" else start_broker(workdir)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    with Embedded(workdir=tmp_path_factory.mktemp("embedded"), broker_kind=broker_kind()) as servers:
        yield servers


#: Test policies (see each file's header).
CORE_POLICY = str(POLICIES / "core.toml")
OPEN_HOURS_POLICY = str(POLICIES / "open-hours.toml")


def env_for(broker_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGUARD_")}
    # short group timeouts: joins and takeovers in seconds, not a minute (the broker
    # holds a JoinGroup reply for about half the session timeout)
    env.update({"CALLGUARD_BROKER": broker_url, "CALLGUARD_REDIS_URL": redis_url, "CALLGUARD_SESSION_TIMEOUT": "3"})
    # the register and operator rules only, unless a test asks for another policy
    env["CALLGUARD_POLICY"] = CORE_POLICY
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def env(embedded: Embedded) -> dict[str, str]:
    return env_for(embedded.broker_url, embedded.redis_url)


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``callguard`` command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "callguard", *argv], env=env, capture_output=True, text=True, timeout=120
    )


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows))
    return path


#: every operator the test modules loaded into the session's Redis
_session_operators: dict[str, str] = {}


def operators_csv(directory: Path, rows: list[str]) -> Path:
    """An operators file with ``rows`` and every operator other modules loaded
    before: ``operators load`` replaces the whole list, and the modules share
    the session's Redis, so no module may take another's operators away."""
    for row in rows:
        _session_operators[row.split(",", 1)[0]] = row
    header = "operator_id,status,valid_from,valid_until,caller_ids,country"
    return write_csv(directory / "operators.csv", header, list(_session_operators.values()))


#: every mandate the test modules loaded into the session's Redis
_session_mandates: set[str] = set()


def mandates_csv(directory: Path, rows: list[str]) -> Path:
    """A mandates file with ``rows`` and every mandate other modules loaded
    before (``mandates load`` replaces the whole list, like the operators)."""
    _session_mandates.update(rows)
    return write_csv(
        directory / "mandates.csv", "client_id,operator_id,valid_from,valid_until", sorted(_session_mandates)
    )


def load_all(env: dict[str, str], *commands: tuple[str, ...]) -> None:
    """Run ``callguard`` loader commands as a user would; each must succeed."""
    for argv in commands:
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr


@dataclass
class CallguardProcess:
    """A ``python -m callguard COMMAND`` process, its output in ``log_path``."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def spawn(self, *argv: str, env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "callguard", *argv], env=env or self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown of its own."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it; killed after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Worker(CallguardProcess):
    """A ``callguard worker`` process."""

    web_port: int = field(default_factory=free_port)

    def start(self, wait: bool = True) -> Worker:
        self.spawn("worker", env={**self.env, "CALLGUARD_WEB_PORT": str(self.web_port)})
        if wait:
            self.wait_healthy()
        return self

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=2) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                if self.health()[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy within {timeout}s\n{self.log_tail()}")


@pytest.fixture(scope="session")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """The session's worker, consuming from the shared broker with the shared Redis."""
    running = Worker(env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield running
    running.stop()


def bootstrap(broker_url: str) -> str:
    return broker_url.split("://", 1)[1]


async def produce(broker_url: str, topic: str, values: list[bytes], keys: list[bytes | None] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), linger_ms=5)
    await producer.start()
    try:
        for index, value in enumerate(values):
            await producer.send(topic, value, key=None if keys is None else keys[index])
        await producer.flush()
    finally:
        await producer.stop()


async def collect(
    broker_url: str,
    topic: str,
    want: set[str],
    key: str = "intent_id",
    timeout: float = 60,
    idle: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Read ``topic`` from the start until every id in ``want`` was seen, or
    ``timeout`` passed, or (with ``idle``) nothing new came for that long."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap(broker_url), auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while not want <= found.keys() and time.monotonic() < deadline:
            if idle is not None and time.monotonic() - last_new > idle:
                break
            batches = await consumer.getmany(timeout_ms=500)
            if batches:
                last_new = time.monotonic()
            for records in batches.values():
                for record in records:
                    message = orjson.loads(record.value)
                    if message.get(key) in want:
                        found.setdefault(message[key], []).append(message)
    finally:
        await consumer.stop()
    return found


# --- durable audit store: one PostgreSQL for the session -----------------


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A PostgreSQL of the tests' own on a free port (never the machine's)."""
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()


# --- replay --------------------------------------------------------------


def replay(env: dict[str, str], *argv: str) -> dict[str, Any]:
    """``callguard replay ... --json`` as a user runs it; it must succeed."""
    result = cli(env, "replay", *argv, "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = orjson.loads(result.stdout)
    return answer


def assert_replays_exactly(env: dict[str, str], version: str, at_least: int, *argv: str) -> dict[str, Any]:
    """Every audit record of the broker in ``env`` decided again under the
    worker's own policy file gives the recorded decision, reasons, not_before
    and requires_operator: zero differences, nothing not replayable."""
    answer = replay(env, "--policy", env["CALLGUARD_POLICY"], "--from", "topic", *argv)
    assert answer["records"] >= at_least, answer
    assert answer["recorded_policies"] == {version: answer["records"]}, answer
    assert (answer["replayed"], answer["changed"], answer["not_replayable"]) == (answer["records"], 0, 0), answer
    return answer


async def decide_intents(broker_url: str, intents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Publish intents keyed by callee, as a dialer does, and return each one's
    (last) decision, every one validated against the shipped schema."""
    from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
    from tests.contract.validation import validate

    values = [orjson.dumps(i) for i in intents]
    await produce(broker_url, INTENTS_TOPIC, values, [i["callee"].encode() for i in intents])
    found = await collect(broker_url, DECISIONS_TOPIC, {i["intent_id"] for i in intents}, timeout=60)
    assert found.keys() == {i["intent_id"] for i in intents}
    decisions = {key: values[-1] for key, values in found.items()}
    for decision in decisions.values():
        validate(decision, "decision")
    return decisions
