"""``POST /v1/check`` on the worker's web server, against a real worker, broker and Redis.

Numbers of this module: +39 347 8NN NNNN (even: opposed, odd: clear);
intent ids start with ``ch-``. The 504 test runs a worker on a broker of its
own whose Redis never answers, so no decision can arrive in time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from callguard.core.schema import AUDIT_TOPIC, DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, start_redis
from tests.conftest import Worker, cli, collect, env_for, load_all, operators_csv, start_test_broker, today, write_csv
from tests.contract.validation import validate
from tests.paths import ROOT

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


def issue(env: dict[str, str], operator: str, *clients: str, name: str | None = None) -> str:
    """A token issued with the CLI as an operator's admin would; the token is the one line on stdout."""
    argv = ["tokens", "issue", "--operator-id", operator, *(a for c in clients for a in ("--client-id", c))]
    result = cli(env, *argv, *(("--name", name) if name else ()))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("cgk_") and "\n" not in token
    return token


@pytest.fixture(scope="module")
def token(env: dict[str, str]) -> str:
    """The token this module's checks present: operator ch-op, client acme."""
    return issue(env, OPERATOR, "acme", name="ch-dialer")


@pytest.fixture
def lone_broker(tmp_path: Path) -> Iterator[Server]:
    """A broker the session worker does not consume from."""
    broker = start_test_broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


# --- POST /v1/check -----------------------------------------------------------------------


def post(port: int, body: bytes, token: str | None, timeout: float = 30) -> tuple[int, dict[str, Any], float]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/check", data=body, headers=headers, method="POST")
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


async def test_http_check_answers_the_decision_from_the_topics(
    loaded: None, worker: Worker, embedded, token: str
) -> None:
    for intent_id, n in (("ch-http-allow", 11), ("ch-http-deny", 12)):
        status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(intent_id, n), token)
        assert status == 200, body
        assert (body["decision"], body["reasons"]) == expected(n) and body["intent_id"] == intent_id
        validate(body, "decision")
        # the same decision is on the topic, and the evidence is in the audit trail
        published = (await collect(embedded.broker_url, DECISIONS_TOPIC, {intent_id}))[intent_id][0]
        assert published == body
        audit = (await collect(embedded.broker_url, AUDIT_TOPIC, {intent_id}))[intent_id][0]
        assert audit["intent"]["callee"] == number(n)

    status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(None, 13), token)
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
    loaded: None, worker: Worker, token: str, body: bytes, status: int, error: str, intent_id: str | None
) -> None:
    got, answer, _ = await asyncio.to_thread(post, worker.web_port, body, token)
    assert got == status, answer
    assert error in answer["error"] and answer["intent_id"] == intent_id and answer["retryable"] is False


async def test_http_check_times_out_with_504_when_no_decision_can_arrive(lone_broker: Server, tmp_path: Path) -> None:
    # the worker's own agent cannot decide (its Redis stops answering once the
    # endpoint has read the tokens) and no other worker runs
    (tmp_path / "redis").mkdir()
    redis_server = start_redis(tmp_path / "redis")
    env = env_for(
        f"kafka://127.0.0.1:{lone_broker.port}", f"redis://127.0.0.1:{redis_server.port}/0",
        CALLGUARD_CHECK_TIMEOUT="1", CALLGUARD_REDIS_TIMEOUT="3", CALLGUARD_APP_ID="callguard-ch-504",
    )  # fmt: skip
    token = issue(env, OPERATOR, "acme")
    worker = Worker(env, tmp_path / "worker.log").start(wait=False)
    frozen = False
    try:
        deadline = time.monotonic() + 60
        attempt = 0
        while True:  # 503 until the endpoint's client has started and read the tokens
            attempt += 1
            try:
                status, body, elapsed = await asyncio.to_thread(
                    post, worker.web_port, intent(f"ch-504-{attempt}", 15), token
                )
            except OSError:
                status = 0
            if status == 200 and not frozen:  # the endpoint works: now freeze Redis (SIGSTOP)
                redis_server.process.send_signal(signal.SIGSTOP)
                frozen = True
                continue
            if (frozen and status not in (0, 503)) or time.monotonic() > deadline:
                break
            assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
            await asyncio.sleep(0.3)
        assert status == 504, (status, body, worker.log_tail())
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
        if frozen:
            redis_server.process.send_signal(signal.SIGCONT)
        worker.stop()
        redis_server.stop()
    assert number(15) not in worker.log_path.read_text()


# --- who may check: tokens ------------------------------------------------------------------


async def test_a_check_without_a_valid_token_is_refused_and_publishes_nothing(
    loaded: None, worker: Worker, embedded, env: dict[str, str]
) -> None:
    other_operator = issue(env, "ch-other-op")
    other_client = issue(env, OPERATOR, "beta")
    cases = {
        "ch-401-none": (None, 401),
        "ch-401-unknown": ("cgk_not-a-token", 401),
        "ch-403-operator": (other_operator, 403),
        "ch-403-client": (other_client, 403),
    }
    for intent_id, (presented, expected_status) in cases.items():
        status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(intent_id, 16), presented)
        assert status == expected_status, body
        assert set(body) == {"error", "intent_id", "retryable"} and "decision" not in body
    # nothing was published for them: no decision ever comes
    found = await collect(embedded.broker_url, DECISIONS_TOPIC, set(cases), timeout=8, idle=4)
    assert not found
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'callguard_check_refusals_total{status="401"}' in metrics
    assert 'callguard_check_refusals_total{status="403"}' in metrics


async def test_a_revoked_token_is_refused_within_seconds(loaded: None, worker: Worker, env: dict[str, str]) -> None:
    revocable = issue(env, OPERATOR, name="ch-revocable")
    deadline = time.monotonic() + 10
    while True:  # a new token is known to the worker within about a second
        status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(None, 17), revocable)
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 200, body
    listed = cli(env, "tokens", "list")
    assert listed.returncode == 0 and "ch-revocable" in listed.stdout and revocable not in listed.stdout
    assert "last used 20" in next(line for line in listed.stdout.splitlines() if line.startswith("ch-revocable"))
    assert cli(env, "tokens", "revoke", "ch-revocable").returncode == 0
    revoked_at = time.monotonic()
    while True:
        status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(None, 17), revocable)
        if status == 401 or time.monotonic() - revoked_at > 10:
            break
        await asyncio.sleep(0.1)
    assert status == 401
    assert time.monotonic() - revoked_at < 3  # refreshed once a second (slack for a busy machine)
    again = cli(env, "tokens", "revoke", "ch-revocable")
    assert again.returncode == 1 and "no token named" in again.stderr


async def test_an_address_that_keeps_presenting_bad_tokens_is_slowed_down(
    lone_broker: Server, embedded, env: dict[str, str], tmp_path: Path
) -> None:
    # a worker of its own: the session worker must not block this machine's address for a minute
    own = env_for(f"kafka://127.0.0.1:{lone_broker.port}", embedded.redis_url, CALLGUARD_APP_ID="callguard-ch-429")
    token = issue(own, OPERATOR, "acme")
    worker = Worker(own, tmp_path / "worker.log").start()
    try:
        statuses = []
        for n in range(12):
            status, body, _ = await asyncio.to_thread(post, worker.web_port, intent(f"ch-429-{n}", 18), "cgk_wrong")
            statuses.append(status)
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
        # the limit is per address and holds even for a good token until the window passes
        status, body, _ = await asyncio.to_thread(post, worker.web_port, intent("ch-429-good", 18), token)
        assert status == 429 and body["retryable"] is True
    finally:
        worker.stop()


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


def test_the_example_dialer_checks_over_http_with_its_token(
    loaded: None, worker: Worker, token: str, tmp_path: Path
) -> None:
    """``examples/check_csv.py --http URL`` presents the token from
    CALLGUARD_TOKEN: its operator's rows are decided, another operator's row is
    refused (403) and not called, and no number is printed in clear."""
    rows = [f"{number(n)},," for n in (15, 16)] + [f"{number(17)},other-op,"]
    path = write_csv(tmp_path / "numbers.csv", "callee,operator_id,client_id", rows)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "check_csv.py"), str(path),
         "--http", f"http://127.0.0.1:{worker.web_port}/v1/check", "--operator", OPERATOR, "--client", "acme"],
        env={**os.environ, "CALLGUARD_TOKEN": token}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 checked" in result.stdout and "1 allowed, 1 denied, 0 timed out (not called), 1 refused" in result.stdout
    assert "HTTP 403" in result.stdout, result.stdout
    assert not any(number(n) in result.stdout for n in (15, 16, 17))
    no_token = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "check_csv.py"), str(path),
         "--http", f"http://127.0.0.1:{worker.web_port}/v1/check", "--token", "cgk_not-a-token"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert no_token.returncode == 0 and "3 refused" in no_token.stdout and "HTTP 401" in no_token.stdout
