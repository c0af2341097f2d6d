"""End to end: data loaded with the CLI, a real worker, intents over a real broker."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from callguard.core.schema import AUDIT_TOPIC, DEADLETTER_TOPIC, DECISIONS_TOPIC, INTENTS_TOPIC, OPTOUTS_TOPIC
from callguard.kafka.topics import ALL_TOPICS
from tests.conftest import Worker, bootstrap, cli, collect, operators_csv, produce, today, write_csv

pytestmark = pytest.mark.e2e

# numbers of this module: +39 348 100 00NN
N = {name: f"+39348100{index:04d}" for index, name in enumerate(
    ["clear", "opposed", "consent", "contract", "dnc", "unchecked", "stale", "beta_only", "rt_optout", "early_consent"]
)}  # fmt: skip


@pytest.fixture(scope="module")
def loaded(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("data")
    t = date.fromisoformat(today())
    ops = operators_csv(
        d,
        ["e2e-ok,active,2024-01-01,2030-12-31,+390844000001", "e2e-susp,suspended,2024-01-01,2030-12-31,",
         f"e2e-old,active,2020-01-01,{t - timedelta(days=1)},"],
    )  # fmt: skip
    register = write_csv(
        d / "register.csv",
        "number,status,registered_at",
        [f"{N['opposed']},opposed,2024-02-01", f"{N['consent']},opposed,2024-02-01",
         f"{N['contract']},opposed,", f"{N['beta_only']},opposed,2024-02-01",
         f"{N['early_consent']},opposed,2024-02-01"],
    )  # fmt: skip
    # a clear result loaded for every client ('*') is nobody's check: acme's clear
    # numbers are loaded as acme's own results
    clear = write_csv(
        d / "clear.csv", "number,status", [f"{N['clear']},clear", f"{N['dnc']},clear", f"{N['rt_optout']},clear"]
    )
    stale = write_csv(d / "stale.csv", "number,status", [f"{N['stale']},clear"])
    beta = write_csv(d / "beta.csv", "number,status", [f"{N['beta_only']},clear"])
    consents = write_csv(
        d / "consents.csv",
        "callee,client_id,basis,granted_at,ends_at",
        [f"{N['consent']},acme,consent,2025-03-01,", f"{N['contract']},acme,contract,2023-01-01T09:00:00,",
         f"{N['early_consent']},acme,consent,2024-01-01,"],
    )  # fmt: skip
    optouts = write_csv(d / "optouts.csv", "callee,client_id,at", [f"{N['dnc']},*,2025-05-05"])
    for argv in (
        ("operators", "load", str(ops)),
        ("register", "load", str(register), "--as-of", str(t - timedelta(days=1))),
        ("register", "load", str(clear), "--as-of", str(t - timedelta(days=1)), "--client", "acme"),
        # valid day D through D+14: a check of 15 days ago is stale
        ("register", "load", str(stale), "--as-of", str(t - timedelta(days=15)), "--client", "acme"),
        ("register", "load", str(beta), "--as-of", str(t), "--client", "beta"),
        ("consents", "load", str(consents)),
        ("optouts", "load", str(optouts)),
    ):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr
    return N


def intent(intent_id: str, callee: str, operator: str = "e2e-ok", client: str = "acme", **extra: str) -> bytes:
    return orjson.dumps(
        {"intent_id": intent_id, "callee": callee, "operator_id": operator, "client_id": client, **extra}
    )


CASES = {
    # intent_id: (callee key or literal, operator, client, extra, expected decision, expected reasons)
    "e2e-clear": ("clear", "e2e-ok", "acme", {}, "allow", []),
    "e2e-written-forms": ("0039 348 100 0000", "e2e-ok", "acme", {}, "allow", []),
    "e2e-opposed": ("opposed", "e2e-ok", "acme", {}, "deny", ["opposition_register"]),
    "e2e-consent": ("consent", "e2e-ok", "acme", {}, "allow", ["consent"]),
    "e2e-consent-other-client": ("consent", "e2e-ok", "other", {}, "deny", ["opposition_register"]),
    "e2e-early-consent": ("early_consent", "e2e-ok", "acme", {}, "deny", ["opposition_register"]),
    "e2e-contract": ("contract", "e2e-ok", "acme", {}, "allow", ["contract"]),
    "e2e-dnc": ("dnc", "e2e-ok", "acme", {}, "deny", ["internal_dnc"]),
    "e2e-unchecked": ("unchecked", "e2e-ok", "acme", {}, "deny", ["not_checked"]),
    "e2e-stale": ("stale", "e2e-ok", "acme", {}, "deny", ["register_stale"]),
    "e2e-beta-withdrawn": ("beta_only", "e2e-ok", "beta", {}, "allow", []),
    "e2e-beta-other": ("beta_only", "e2e-ok", "acme", {}, "deny", ["opposition_register"]),
    "e2e-service": ("unchecked", "e2e-ok", "acme", {"purpose": "service"}, "allow", []),
    "e2e-survey": ("unchecked", "e2e-ok", "acme", {"purpose": "survey"}, "deny", ["not_checked"]),
    "e2e-invalid": ("12345", "e2e-ok", "acme", {}, "deny", ["invalid_number"]),
    "e2e-op-unknown": ("clear", "nobody", "acme", {}, "deny", ["operator_unknown"]),
    "e2e-op-suspended": ("clear", "e2e-susp", "acme", {}, "deny", ["operator_inactive"]),
    "e2e-op-expired": ("clear", "e2e-old", "acme", {}, "deny", ["operator_expired"]),
    "e2e-many": ("opposed", "e2e-susp", "acme", {}, "deny", ["operator_inactive", "opposition_register"]),
}


async def test_every_reason_end_to_end(loaded: dict[str, str], worker: Worker, embedded) -> None:
    values = [
        intent(intent_id, loaded.get(callee, callee), operator, client, **extra)
        for intent_id, (callee, operator, client, extra, _, _) in CASES.items()
    ]
    await produce(embedded.broker_url, INTENTS_TOPIC, values)
    decisions = await collect(embedded.broker_url, DECISIONS_TOPIC, set(CASES))
    assert set(decisions) == set(CASES), f"missing decisions: {set(CASES) - set(decisions)}\n{worker.log_tail()}"
    for intent_id, (_, _, _, _, verdict, reasons) in CASES.items():
        decision = decisions[intent_id][0]
        assert (decision["decision"], decision["reasons"]) == (verdict, reasons), intent_id
        assert decision["retryable"] is False
        assert decision["versions"]["policy"]
        assert decision["decided_at"].endswith("Z")
    assert decisions["e2e-written-forms"][0]["callee"] == loaded["clear"]
    assert decisions["e2e-invalid"][0]["callee"] is None
    assert decisions["e2e-clear"][0]["versions"]["register"] == str(date.fromisoformat(today()) - timedelta(days=1))

    audits = await collect(embedded.broker_url, AUDIT_TOPIC, set(CASES))
    assert set(audits) == set(CASES)
    consent_audit = audits["e2e-consent"][0]
    assert consent_audit["intent"]["callee"] == loaded["consent"]
    assert consent_audit["intent"]["client_id"] == "acme"
    rules = {r["rule"]: r for r in consent_audit["rules"]}
    assert rules["opposition_register"]["outcome"] == "allow_exception"
    assert rules["opposition_register"]["detail"]["result"]["registered_at"] == "2024-02-01"
    assert rules["opposition_register"]["detail"]["exceptions"][0]["granted_at"] == "2025-03-01"
    assert consent_audit["source"]["topic"] == INTENTS_TOPIC


async def test_malformed_messages_go_to_the_dead_letter_topic(loaded: dict[str, str], worker: Worker, embedded) -> None:
    bad = [
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
        orjson.dumps({"intent_id": "e2e-bad-missing", "operator_id": "e2e-ok", "client_id": "acme"}),
        orjson.dumps({"intent_id": "e2e-bad-purpose", "callee": loaded["clear"], "operator_id": "e2e-ok",
                      "client_id": "acme", "purpose": "sales"}),
        orjson.dumps({"intent_id": "e2e-bad-big", "callee": "1" * 70_000}),
    ]  # fmt: skip
    good = intent("e2e-after-bad", loaded["clear"])
    await produce(embedded.broker_url, INTENTS_TOPIC, [*bad, good])
    want = {"e2e-bad-missing", "e2e-bad-purpose", "e2e-after-bad"}
    decisions = await collect(embedded.broker_url, DECISIONS_TOPIC, want)
    assert decisions["e2e-after-bad"][0]["decision"] == "allow"
    for intent_id in ("e2e-bad-missing", "e2e-bad-purpose"):
        assert decisions[intent_id][0]["reasons"] == ["malformed_intent"]
        assert decisions[intent_id][0]["decision"] == "deny"

    raws = {base64.b64encode(value).decode() for value in bad}
    dead = await collect(embedded.broker_url, DEADLETTER_TOPIC, raws, key="raw_base64")
    assert set(dead) == raws
    by_raw = {k: v[0] for k, v in dead.items()}
    assert "not JSON" in by_raw[base64.b64encode(bad[0]).decode()]["error"]
    assert by_raw[base64.b64encode(bad[0]).decode()]["raw"] is None
    assert by_raw[base64.b64encode(bad[1]).decode()]["error"] == "not a JSON object"
    assert by_raw[base64.b64encode(bad[2]).decode()]["intent_id"] == "e2e-bad-missing"
    assert "larger than" in by_raw[base64.b64encode(bad[4]).decode()]["error"]
    assert all(d["source"]["topic"] == INTENTS_TOPIC for d in by_raw.values())


async def test_realtime_optout_applies_to_the_next_intent(loaded: dict[str, str], worker: Worker, embedded) -> None:
    number = loaded["rt_optout"]
    await produce(embedded.broker_url, INTENTS_TOPIC, [intent("e2e-rt-before", number)])
    before = await collect(embedded.broker_url, DECISIONS_TOPIC, {"e2e-rt-before"})
    assert before["e2e-rt-before"][0]["decision"] == "allow"

    await produce(embedded.broker_url, OPTOUTS_TOPIC, [orjson.dumps({"callee": "348 100 0008", "client_id": "acme"})])
    deadline = time.monotonic() + 10
    attempt = 0
    while True:
        attempt += 1
        intent_id = f"e2e-rt-after-{attempt}"
        await produce(embedded.broker_url, INTENTS_TOPIC, [intent(intent_id, number)])
        after = (await collect(embedded.broker_url, DECISIONS_TOPIC, {intent_id}))[intent_id][0]
        if after["decision"] == "deny" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert after["reasons"] == ["internal_dnc"], worker.log_tail()


async def test_bad_optout_goes_to_the_dead_letter_topic(worker: Worker, embedded) -> None:
    bad = orjson.dumps({"callee": "not a number", "client_id": "acme", "marker": "e2e-bad-optout"})
    await produce(embedded.broker_url, OPTOUTS_TOPIC, [bad])
    raw = base64.b64encode(bad).decode()
    dead = await collect(embedded.broker_url, DEADLETTER_TOPIC, {raw}, key="raw_base64")
    assert dead[raw][0]["source"]["topic"] == OPTOUTS_TOPIC
    assert "callee" in dead[raw][0]["error"]


async def test_worker_creates_every_topic(worker: Worker, embedded) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(embedded.broker_url))
    await admin.start()
    try:
        deadline = time.monotonic() + 20
        while not set(ALL_TOPICS) <= set(await admin.list_topics()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert set(ALL_TOPICS) <= set(await admin.list_topics())
        described = await admin.describe_topics(list(ALL_TOPICS))
        # created by the worker with CALLGUARD_TOPIC_PARTITIONS (6), not by broker auto-creation
        assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(ALL_TOPICS, 6)
    finally:
        await admin.close()


def test_health_reports_consuming_and_redis(worker: Worker) -> None:
    status, body = worker.health()
    assert status == 200
    assert body["status"] == "ok" and body["redis"] == "ok" and body["consuming"] is True
    assert body["assigned_partitions"]


def test_logs_never_show_a_number_in_clear(worker: Worker, loaded: dict[str, str]) -> None:
    text = Path(worker.log_path).read_text()
    for number in loaded.values():
        assert number not in text and number[1:] not in text
