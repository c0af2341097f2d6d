"""``POST /v1/check`` on the worker's web server, against a real worker, broker and Redis.

Numbers of this module: +39 347 8NN NNNN (even: opposed, odd: clear);
intent ids start with ``ch-``. The 504 test runs a worker on a broker of its
own whose Redis never answers, so no decision can arrive in time.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from callguard.embedded import Server
from callguard.schema import AUDIT_TOPIC, DECISIONS_TOPIC, INTENTS_TOPIC
from tests.conftest import Worker, cli, collect, env_for, load_all, operators_csv, start_test_broker, today, write_csv
from tests.contract import validate

pytestmark = pytest.mark.e2e

OPERATOR = "ch-op"


def number(n: int) -> str:
    return f"+393478{n:06d}"


def expected(n: int) -> tuple[str, list[str]]:
    return ("deny", ["opposition_register"]) if n % 2 == 0 else ("allow", [])


@pytest.fixture(scope="module")
def loaded(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("http-data")
    rows = [f"{number(n)},{'opposed' if n % 2 == 0 else 'clear'},2024-02-01" for n in range(20)]
    register = write_csv(d / "register.csv", "number,status,registered_at", rows)
    ops = operators_csv(d, [f"{OPERATOR},active,2024-01-01,2030-12-31,"])
    # the intents are acme's: a clear result loaded for every client ('*') is nobody's check
    load_all(
        env,
        ("operators", "load", str(ops)),
        ("register", "load", str(register), "--as-of", today(), "--client", "acme"),
    )


@pytest.fixture
def lone_broker(tmp_path: Path) -> Iterator[Server]:
    """A broker the session worker does not consume from."""
    broker = start_test_broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


# --- POST /v1/check -----------------------------------------------------------------------


def post(port: int, body: bytes, timeout: float = 30) -> tuple[int, dict[str, Any], float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/check", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read()), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read()), time.monotonic() - started


def intent(intent_id: str | None, n: int, **extra: Any) -> bytes:
    body = {"callee": number(n), "operator_id": OPERATOR, "client_id": "acme", **extra}
    if intent_id is not None:
        body["intent_id"] = intent_id
    return orjson.dumps(body)


async def test_http_check_answers_the_decision_from_the_topics(loaded: None, worker: Worker, embedded) -> None:
    for intent_id, n in (("ch-http-allow", 11), ("ch-http-deny", 12)):
        status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(intent_id, n))
        assert status == 200, body
        assert (body["decision"], body["reasons"]) == expected(n) and body["intent_id"] == intent_id
        validate(body, "decision")
        # the same decision is on the topic, and the evidence is in the audit trail
        published = (await collect(embedded.broker_url, DECISIONS_TOPIC, {intent_id}))[intent_id][0]
        assert published == body
        audit = (await collect(embedded.broker_url, AUDIT_TOPIC, {intent_id}))[intent_id][0]
        assert audit["intent"]["callee"] == number(n)

    status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(None, 13))
    assert status == 200 and body["decision"] == "allow"
    assert body["intent_id"].startswith("http-")
    audit = (await collect(embedded.broker_url, AUDIT_TOPIC, {body["intent_id"]}))[body["intent_id"]][0]
    assert audit["intent"]["callee"] == number(13) and audit["source"]["topic"] == INTENTS_TOPIC


@pytest.mark.parametrize(
    ("body", "status", "error", "intent_id"),
    [
        (b"{not json", 400, "not JSON", None),
        (b"[1, 2]", 400, "not a JSON object", None),
        (orjson.dumps({"intent_id": "ch-400", "operator_id": OPERATOR, "client_id": "acme"}), 400,
         "missing field 'callee'", "ch-400"),
        (intent("ch-400-star", 14, client_id="*"), 400, "client_id '*' is reserved", "ch-400-star"),
        (intent("ch-400-purpose", 14, purpose="sales"), 400, "field 'purpose' must be one of", "ch-400-purpose"),
        (intent("", 14), 400, "field 'intent_id' must be 1-128 characters", None),
        (intent("ch-413", 14, padding="x" * 70_000), 413, "larger than 65536 bytes", None),
    ],
)  # fmt: skip
async def test_http_check_rejects_bad_bodies_with_json_errors(
    loaded: None, worker: Worker, body: bytes, status: int, error: str, intent_id: str | None
) -> None:
    got, answer, _ = await asyncio.to_thread(post, worker.web_port, body)
    assert got == status, answer
    assert error in answer["error"] and answer["intent_id"] == intent_id and answer["retryable"] is False


class BlackHole:
    """A TCP port that accepts connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


async def test_http_check_times_out_with_504_when_no_decision_can_arrive(lone_broker: Server, tmp_path: Path) -> None:
    # the worker's own agent cannot decide (its Redis never answers) and no other worker runs
    hole = BlackHole()
    env = env_for(
        f"kafka://127.0.0.1:{lone_broker.port}", f"redis://127.0.0.1:{hole.port}/0",
        CALLGUARD_CHECK_TIMEOUT="1", CALLGUARD_REDIS_TIMEOUT="3", CALLGUARD_APP_ID="callguard-ch-504",
    )  # fmt: skip
    worker = Worker(env, tmp_path / "worker.log").start(wait=False)
    try:
        deadline = time.monotonic() + 60
        attempt = 0
        while True:  # 503 until the endpoint's client has started
            attempt += 1
            try:
                status, body, elapsed = await asyncio.to_thread(post, worker.web_port, intent(f"ch-504-{attempt}", 15))
            except OSError:
                status = 0
            if status not in (0, 503) or time.monotonic() > deadline:
                break
            assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
            await asyncio.sleep(0.3)
        assert status == 504, worker.log_tail()
        assert body == {"error": body["error"], "intent_id": f"ch-504-{attempt}", "retryable": True}
        assert "treat as a deny" in body["error"] and "decision" not in body
        assert 1.0 <= elapsed < 5
        # the intent is still decided once Redis times out, and that late decision is in the evidence
        broker_url = env["CALLGUARD_BROKER"]
        late = (await collect(broker_url, DECISIONS_TOPIC, {body["intent_id"]}, timeout=30))[body["intent_id"]][0]
        assert late["reasons"] == ["lookup_unavailable"] and late["retryable"] is True
        validate(late, "decision")
        validate((await collect(broker_url, AUDIT_TOPIC, {body["intent_id"]}))[body["intent_id"]][0], "audit")
    finally:
        worker.stop()
        hole.close()
    assert number(15) not in worker.log_path.read_text()


@pytest.mark.parametrize("value", ["0", "61", "soon"])
def test_check_timeout_is_validated_at_start(env: dict[str, str], value: str) -> None:
    result = cli({**env, "CALLGUARD_CHECK_TIMEOUT": value}, "worker")
    assert result.returncode == 2
    assert result.stderr.startswith("callguard: CALLGUARD_CHECK_TIMEOUT: expected"), result.stderr


def test_the_session_worker_logs_no_number_of_this_module_in_clear(loaded: None, worker: Worker) -> None:
    text = worker.log_path.read_text()
    assert "/v1/check" in text or "CheckClient" in text  # the log is the worker's, endpoint included
    for n in range(20):
        assert number(n) not in text and number(n)[1:] not in text
