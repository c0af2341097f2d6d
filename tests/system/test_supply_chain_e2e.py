"""The supply chain and the person's own word end to end: a real worker on a
broker of its own, the session's Redis, data loaded through the CLI.

- mandates: a call centre without a mandate of the client in force is denied
  ``operator_not_mandated``; a mandates file with one bad line loads nothing;
- ``callguard.consents``: a call request and a consent published by the
  Python client take effect within seconds; a request lifts the register for
  one call; a malformed message is dead-lettered with its error;
- an operator abroad showing an Italian number: ``caller_id_foreign_origin``;
- ``script_id`` and ``list_source`` reach the audit record.

Numbers: ``+39 333 7xx xxxx`` (this module's range).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from callguard.client import GuardClient
from callguard.core.schema import AUDIT_TOPIC, CONSENTS_TOPIC, DEADLETTER_TOPIC
from callguard.dev.embedded import Embedded
from tests.conftest import (
    Worker,
    assert_replays_exactly,
    cli,
    collect,
    env_for,
    load_all,
    mandates_csv,
    operators_csv,
    produce,
    start_test_broker,
    today,
    write_csv,
)
from tests.conftest import (
    decide_intents as decide,
)
from tests.contract.validation import validate

pytestmark = pytest.mark.e2e

CLIENT = "sc-acme"
OTHER = "sc-beta"
N = {
    name: f"+3933370000{index:02d}" for index, name in enumerate(["clear", "unchecked", "request", "consent", "abroad"])
}
POLICY = """
base = "it"
version = "test-e2e-supply-chain"

[rules.calling_hours]
weekday = "00:00-24:00"
saturday = "00:00-24:00"
pre_holiday = "00:00-24:00"
sunday = "00:00-24:00"
holiday = "00:00-24:00"
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_test_broker(tmp_path_factory.mktemp("chain-broker"))
    yield f"kafka://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def env(broker: str, embedded: Embedded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("chain")
    policy = d / "policy.toml"
    policy.write_text(POLICY)
    environment = env_for(broker, embedded.redis_url, CALLGUARD_POLICY=str(policy))
    t = date.fromisoformat(today())
    ops = operators_csv(
        d,
        [
            "sc-op,active,2024-01-01,2030-12-31,+39 0844 000333",
            "sc-unmandated,active,2024-01-01,2030-12-31,+39 0844 000334",
            "sc-tirana,active,2024-01-01,2030-12-31,+39 0844 000335,AL",
        ],
    )
    mandates = mandates_csv(
        d,
        [
            f"{CLIENT},sc-op,2024-01-01,2030-12-31",
            f"{CLIENT},sc-tirana,2024-01-01,2030-12-31",
            f"{OTHER},sc-op,2024-01-01,{t - timedelta(days=1)}",  # ended yesterday
        ],
    )
    register = write_csv(d / "reg.csv", "number,status", [f"{N[k]},clear" for k in ("clear", "abroad")])
    directory = write_csv(d / "dir.csv", "number", [N["clear"], N["abroad"], N["unchecked"], N["request"]])
    load_all(
        environment,
        ("operators", "load", str(ops)),
        ("mandates", "load", str(mandates)),
        ("register", "load", str(register), "--as-of", str(t), "--client", CLIENT),
        ("directory", "load", str(directory), "--as-of", str(t)),
    )
    return environment


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(env, tmp_path_factory.mktemp("chain-worker") / "worker.log").start()
    yield running
    running.stop()


def intent(intent_id: str, number: str, operator: str = "sc-op", client: str = CLIENT, **extra: Any) -> dict[str, Any]:
    caller = {"sc-op": "+39 0844 000333", "sc-unmandated": "+39 0844 000334", "sc-tirana": "+39 0844 000335"}
    return {
        "intent_id": intent_id,
        "callee": N[number],
        "operator_id": operator,
        "client_id": client,
        "caller_id": caller[operator],
        **extra,
    }


def verdicts(decisions: dict[str, dict[str, Any]]) -> dict[str, tuple[str, list[str]]]:
    return {key: (d["decision"], d["reasons"]) for key, d in decisions.items()}


async def test_mandates_and_caller_ids_from_abroad(broker: str, env: dict[str, str], worker: Worker) -> None:
    decisions = await decide(
        broker,
        [
            intent("sc-mandated", "clear", script_id="sc-script-1", list_source="directory"),
            intent("sc-not-mandated", "clear", operator="sc-unmandated"),
            intent("sc-ended", "clear", client=OTHER),
            intent("sc-abroad", "abroad", operator="sc-tirana"),
        ],
    )
    assert verdicts(decisions) == {
        "sc-mandated": ("allow", []),
        "sc-not-mandated": ("deny", ["operator_not_mandated"]),
        "sc-ended": ("deny", ["operator_not_mandated", "not_checked"]),
        "sc-abroad": ("deny", ["caller_id_foreign_origin"]),
    }
    assert decisions["sc-mandated"]["versions"]["mandates"]
    audit = await collect(broker, AUDIT_TOPIC, {"sc-mandated"}, timeout=30)
    record = audit["sc-mandated"][-1]
    validate(record, "audit")
    assert (record["intent"]["script_id"], record["intent"]["list_source"]) == ("sc-script-1", "directory")
    status = cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert "mandates: " in status.stdout and "in force today" in status.stdout


async def test_live_consents_and_call_requests(broker: str, env: dict[str, str], worker: Worker) -> None:
    before = await decide(broker, [intent("sc-request-0", "request"), intent("sc-consent-0", "consent")])
    assert verdicts(before) == {
        "sc-request-0": ("deny", ["not_checked"]),
        "sc-consent-0": ("deny", ["not_checked", "consent_required"]),
    }
    async with GuardClient(broker, timeout=10) as guard:
        await guard.record_consent(N["request"], CLIENT, "request")
        await guard.record_consent(N["consent"], CLIENT, "consent", granted_at=date(2025, 6, 1))
    # bad messages: a '*' client and a basis nobody knows
    bad = [
        {"callee": N["consent"], "client_id": "*", "basis": "consent", "granted_at": "2025-01-01"},
        {"callee": N["consent"], "client_id": CLIENT, "basis": "blanket", "granted_at": "2025-01-01"},
    ]
    await produce(broker, CONSENTS_TOPIC, [orjson.dumps(message) for message in bad])
    deadline = time.monotonic() + 30
    while True:
        after = await decide(broker, [intent(f"sc-request-{int(time.time() * 1000)}", "request")])
        (decision,) = after.values()
        if decision["decision"] == "allow" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (decision["decision"], decision["reasons"]) == ("allow", ["request"])
    # one call per request: the next intent needs the register again
    again = await decide(broker, [intent("sc-request-again", "request")])
    assert verdicts(again) == {"sc-request-again": ("deny", ["not_checked"])}
    # a consent lifts the directory rule but not the register's not_checked
    consented = await decide(broker, [intent("sc-consent-1", "consent")])
    assert verdicts(consented) == {"sc-consent-1": ("deny", ["not_checked"])}
    errors = await dead_letter_errors(broker)
    assert any("client_id '*'" in e for e in errors), errors
    assert any("basis must be 'consent', 'contract' or 'request'" in e for e in errors), errors


async def dead_letter_errors(broker: str) -> list[str]:
    consumer = AIOKafkaConsumer(
        DEADLETTER_TOPIC, bootstrap_servers=broker.split("://", 1)[1], auto_offset_reset="earliest"
    )
    await consumer.start()
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(errors) < 2:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    message = orjson.loads(record.value)
                    validate(message, "deadletter")
                    if message["source"]["topic"] == CONSENTS_TOPIC:
                        errors.append(message["error"])
    finally:
        await consumer.stop()
    return errors


def test_a_mandates_file_with_a_bad_line_loads_nothing(env: dict[str, str], tmp_path) -> None:
    before = cli(env, "status").stdout
    bad = write_csv(
        tmp_path / "mandates.csv",
        "client_id,operator_id,valid_from,valid_until",
        ["x,y,2024-01-01,2030-12-31", "x,y,2030-01-01,2024-12-31", "x,y,someday,2030-12-31"],
    )
    result = cli(env, "mandates", "load", str(bad))
    assert result.returncode == 1
    assert "mandates.csv:3: valid_until is before valid_from" in result.stderr
    assert "mandates.csv:4:" in result.stderr and "nothing was loaded" in result.stderr
    after = cli(env, "status").stdout
    line = next(line for line in before.splitlines() if line.startswith("mandates:"))
    assert line in after


def test_explain_shows_the_mandate_and_a_request(env: dict[str, str]) -> None:
    shown = cli(env, "explain", "--callee", N["clear"], "--operator-id", "sc-unmandated", "--client-id", CLIENT,
                "--caller-id", "+39 0844 000334", "--at", datetime.now(UTC).isoformat())  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "operator_mandated" in shown.stdout and "operator_not_mandated" in shown.stdout


def test_replay_reproduces_every_decision_of_this_module(env: dict[str, str], worker: Worker) -> None:
    """Determinism: mandates, caller IDs from abroad, live consents and call
    requests, decided again from their audit records under the same policy."""
    assert_replays_exactly(env, "test-e2e-supply-chain", 5)
