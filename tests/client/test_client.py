"""The dialer client (async and synchronous) against a real worker, broker and Redis.

Numbers of this module: +39 347 9NN NNNN (even: opposed, odd: clear);
intent ids start with ``cl-``. Tests where no decision may arrive run on a
broker of their own, so the session worker cannot answer them.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from callguard.client import CheckTimeout, GuardClient, GuardClosed, GuardDecision, GuardUnavailable, SyncGuardClient
from callguard.config import Settings
from callguard.core.numbers import mask
from callguard.core.schema import AUDIT_TOPIC, OUTCOMES_TOPIC
from callguard.dev.embedded import Server
from callguard.kafka.topics import ensure_topics
from tests.conftest import Worker, collect, load_all, operators_csv, start_test_broker, today, write_csv
from tests.contract.validation import validate
from tests.paths import ROOT

pytestmark = pytest.mark.e2e

OPERATOR = "cl-op"
COUNT = 1000


def number(n: int) -> str:
    return f"+393479{n:06d}"


def expected(n: int) -> tuple[str, list[str]]:
    return ("deny", ["opposition_register"]) if n % 2 == 0 else ("allow", [])


@pytest.fixture(scope="module")
def loaded(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("client-data")
    rows = [f"{number(n)},{'opposed' if n % 2 == 0 else 'clear'},2024-02-01" for n in range(COUNT + 100)]
    register = write_csv(d / "register.csv", "number,status,registered_at", rows)
    ops = operators_csv(d, [f"{OPERATOR},active,2024-01-01,2030-12-31,"])
    # the intents are all acme's: a clear result loaded for every client ('*') is nobody's check
    load_all(
        env,
        ("operators", "load", str(ops)),
        ("register", "load", str(register), "--as-of", today(), "--client", "acme"),
    )


# --- the async client -------------------------------------------------------------


async def test_a_thousand_simultaneous_checks_share_one_client(loaded: None, worker: Worker, embedded) -> None:
    async with GuardClient(embedded.broker_url, timeout=90, intent_prefix="cl-1k-") as guard:
        # every callee written differently from its E.164 form, as dialers do
        results = await asyncio.gather(
            *(guard.check(callee=f"0039 347 9{n:06d}", operator_id=OPERATOR, client_id="acme") for n in range(COUNT))
        )
    assert all(isinstance(r, GuardDecision) for r in results), worker.log_tail()
    assert len({r.intent_id for r in results}) == COUNT
    assert all(r.intent_id.startswith("cl-1k-") for r in results)
    for n, result in enumerate(results):
        assert isinstance(result, GuardDecision)
        assert (result.decision, list(result.reasons)) == expected(n), n
        assert result.callee == number(n) and result.allowed is (n % 2 == 1)
        assert result.versions["policy"] and result.retryable is False


async def test_check_fields_reach_the_audit_trail(loaded: None, worker: Worker, embedded) -> None:
    async with GuardClient(embedded.broker_url, timeout=30) as guard:
        result = await guard.check(
            callee=number(COUNT + 1), operator_id=OPERATOR, client_id="acme", purpose="survey",
            caller_id="+390844000001", campaign_id="cl-campaign", intent_id="cl-fields",
        )  # fmt: skip
    assert isinstance(result, GuardDecision) and result.allowed and result.intent_id == "cl-fields"
    validate(dict(result.message), "decision")
    audit = (await collect(embedded.broker_url, AUDIT_TOPIC, {"cl-fields"}))["cl-fields"][0]
    assert audit["intent"] == {
        "callee": number(COUNT + 1), "callee_input": None, "operator_id": OPERATOR, "client_id": "acme",
        "purpose": "survey", "caller_id": "+390844000001", "campaign_id": "cl-campaign", "requested_at": None,
        "automated": False,
        "script_id": None,
        "list_source": None,
    }  # fmt: skip


async def test_an_intent_id_cannot_be_checked_twice_at_once(loaded: None, worker: Worker, embedded) -> None:
    async with GuardClient(embedded.broker_url, timeout=30) as guard:
        first = asyncio.create_task(guard.check(number(COUNT + 3), OPERATOR, "acme", intent_id="cl-twice"))
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="already being checked"):
            await guard.check(number(COUNT + 3), OPERATOR, "acme", intent_id="cl-twice")
        assert (await first).allowed
    with pytest.raises(GuardClosed):
        await guard.check(number(COUNT + 3), OPERATOR, "acme")


@pytest.fixture
def lone_broker(tmp_path: Path) -> Iterator[Server]:
    """A broker no worker consumes from."""
    broker = start_test_broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


async def test_no_worker_means_timeouts_never_allows(lone_broker: Server) -> None:
    broker_url = f"kafka://127.0.0.1:{lone_broker.port}"
    with pytest.raises(GuardUnavailable, match="does not exist"):
        await GuardClient(broker_url, start_timeout=1).start()

    await ensure_topics(Settings(broker=broker_url))  # as a worker that has since stopped left them
    async with GuardClient(broker_url, timeout=0.5, intent_prefix="cl-lone-") as guard:
        started = time.monotonic()
        results = await asyncio.gather(*(guard.check(number(n), OPERATOR, "acme") for n in range(50)))
        elapsed = time.monotonic() - started
    assert all(isinstance(r, CheckTimeout) for r in results)
    assert not any(r.allowed for r in results)
    assert {(r.decision, r.retryable, r.waited) for r in results} == {("timeout", True, 0.5)}
    assert 0.5 <= elapsed < 10


def test_unreachable_broker_is_guard_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GuardUnavailable, match="cannot reach"):
        SyncGuardClient(f"kafka://127.0.0.1:{port}", start_timeout=1).start()


# --- the synchronous wrapper ------------------------------------------------------------


def test_sync_client_checks_from_many_threads_reports_outcomes_and_opts_out(
    loaded: None, worker: Worker, embedded
) -> None:
    with SyncGuardClient(embedded.broker_url, timeout=30, intent_prefix="cl-sync-") as guard:
        with ThreadPoolExecutor(8) as pool:
            numbers = range(COUNT, COUNT + 40)
            results = list(pool.map(lambda n: guard.check(number(n), OPERATOR, "acme"), numbers))
        for n, result in zip(numbers, results, strict=True):
            assert isinstance(result, GuardDecision) and (result.decision, list(result.reasons)) == expected(n)

        allowed = results[1]
        assert allowed.allowed
        guard.report_outcome(allowed.intent_id, "answered")
        with pytest.raises(ValueError, match="outcome must be one of"):
            guard.report_outcome(allowed.intent_id, "maybe")  # type: ignore[arg-type]

        # an opt-out through the client applies to the next check of that callee (any written form)
        guard.opt_out("347 9" + number(COUNT + 1)[-6:], client_id="acme")
        deadline = time.monotonic() + 15
        while True:
            after = guard.check(number(COUNT + 1), OPERATOR, "acme")
            if not after.allowed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert isinstance(after, GuardDecision) and list(after.reasons) == ["internal_dnc"]

    outcomes = asyncio.run(collect(embedded.broker_url, OUTCOMES_TOPIC, {allowed.intent_id}))
    outcome = outcomes[allowed.intent_id][0]
    assert outcome["outcome"] == "answered"
    validate(outcome, "outcome")


# --- the example dialer -----------------------------------------------------------------------


def test_example_dialer_prints_a_masked_table(loaded: None, worker: Worker, embedded, tmp_path: Path) -> None:
    numbers = [number(n) for n in range(COUNT + 10, COUNT + 16)]
    path = write_csv(tmp_path / "numbers.csv", "callee,purpose", [f"{n}," for n in numbers] + ["12345,service"])
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "check_csv.py"), str(path), "--broker", embedded.broker_url,
         "--operator", OPERATOR, "--client", "acme", "--timeout", "30"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "7 checked" in result.stdout and "3 allowed, 4 denied, 0 timed out" in result.stdout, result.stdout
    assert "opposition_register" in result.stdout and "invalid_number" in result.stdout
    assert mask(numbers[0]) in result.stdout
    assert not any(n in result.stdout or n[1:] in result.stdout for n in numbers)
