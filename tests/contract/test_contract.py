"""The published contract (``callguard/contract/``) against the code.

Real messages from an end-to-end run on the session worker (decisions, audit
records and dead letters for every reason the data can produce, opt-outs and
outcomes published by the client) must validate against the shipped JSON
Schemas, and the AsyncAPI document must describe every topic, so the
documents cannot drift from the code. Numbers of this module:
+39 347 7NN NNNN; intent ids start with ``ct-``.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from callguard import __version__
from callguard.client import GuardClient, GuardDecision
from callguard.contract import ASYNCAPI, SCHEMAS, path, schema
from callguard.core.schema import (
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    DECISIONS_TOPIC,
    INTENTS_TOPIC,
    OPTOUTS_TOPIC,
    OUTCOMES_TOPIC,
    MalformedIntent,
    Reason,
    parse_intent,
)
from callguard.kafka.topics import ALL_TOPICS
from tests.conftest import Worker, bootstrap, cli, collect, operators_csv, produce, today, write_csv
from tests.contract.reasons import CALLING_RULE_REASONS, ITALIAN_LAW_ONLY_REASONS, US_PACK_REASONS
from tests.contract.validation import errors, validate
from tests.paths import ROOT

N = {name: f"+393477{index:06d}" for index, name in enumerate(
    ["clear", "opposed", "consent", "contract", "stale", "dnc", "unchecked", "client_only", "dnc_consent", "optout_target"]
)}  # fmt: skip


# --- the documents themselves ------------------------------------------------------------


def test_every_schema_is_valid_draft_2020_12_with_an_id() -> None:
    for kind, name in SCHEMAS.items():
        document = schema(kind)
        jsonschema.Draft202012Validator.check_schema(document)
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert document["$id"].endswith("/" + name)


def test_reason_codes_in_the_schema_are_exactly_the_codes_in_the_code() -> None:
    assert set(schema("decision")["$defs"]["reason"]["enum"]) == {reason.value for reason in Reason}


def test_asyncapi_document_names_every_topic_and_resolves() -> None:
    document = yaml.safe_load(path(ASYNCAPI).read_text())
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == __version__
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {*ALL_TOPICS, OUTCOMES_TOPIC}

    def resolve(ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    for name, operation in document["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = resolve(operation["channel"]["$ref"])
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), name
            resolve(message["$ref"])
        assert channel["address"] in addresses
    operated = {resolve(op["channel"]["$ref"])["address"] for op in document["operations"].values()}
    assert operated == addresses
    shipped = set(SCHEMAS.values())
    for channel in document["channels"].values():
        for message in channel["messages"].values():
            payload = resolve(message["$ref"])["payload"]
            assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"
            assert payload["schema"]["$ref"].removeprefix("./") in shipped


def test_readme_links_the_contract_files() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in (ASYNCAPI, *SCHEMAS.values()):
        assert f"src/callguard/contract/{name}" in readme, name


def test_schemas_are_not_vacuous() -> None:
    decision = {"intent_id": "x", "decision": "allow", "reasons": [], "callee": "+393475555555",
                "decided_at": "2026-01-01T00:00:00.000Z", "retryable": False, "versions": {"policy": "p"}}  # fmt: skip
    assert not errors(decision, "decision")
    assert errors({**decision, "reasons": ["opposition_register"]}, "decision")  # an allow with a deny reason
    assert errors({**decision, "decision": "deny"}, "decision")  # a deny without a reason
    assert errors({**decision, "decision": "maybe"}, "decision")
    assert errors({**decision, "callee": "3475555555"}, "decision")
    assert errors({k: v for k, v in decision.items() if k != "versions"}, "decision")
    assert errors({**decision, "intent": None, "rules": [], "facts": {}, "source": {}}, "audit")
    assert errors({"intent_id": "x", "outcome": "maybe", "at": "2026-01-01T00:00:00.000Z"}, "outcome")


INTENT = {"intent_id": "i-1", "callee": "+39 347 555 5555", "operator_id": "op", "client_id": "acme"}


@pytest.mark.parametrize(
    "change",
    [
        {}, {"purpose": "survey"}, {"purpose": "service", "caller_id": "+390844000001", "campaign_id": "c"},
        {"requested_at": "2026-01-02T03:04:05+01:00"}, {"requested_at": "2026-01-02T03:04:05.123Z"},
        {"caller_id": None, "campaign_id": None, "requested_at": None}, {"future_field": [1]},
        {"callee": "not a number at all"},
        {"intent_id": ""}, {"intent_id": "x" * 129}, {"intent_id": 5}, {"intent_id": None},
        {"callee": None}, {"callee": 393475555555}, {"operator_id": ""}, {"client_id": "*"},
        {"client_id": "c" * 129}, {"purpose": "sales"}, {"purpose": None}, {"requested_at": "yesterday"},
        {"requested_at": "2026-01-02T03:04:05"}, {"requested_at": 5}, {"caller_id": 5},
        {"campaign_id": "c" * 129}, {"purpose": "statistical"}, {"automated": True}, {"automated": False},
        {"automated": "yes"}, {"automated": 1},
    ],
)  # fmt: skip
def test_the_intent_schema_accepts_exactly_what_the_worker_accepts(change: dict[str, Any]) -> None:
    body = {k: v for k, v in {**INTENT, **change}.items() if not (k in change and v is None and k in INTENT)}
    try:
        parse_intent(orjson.dumps(body))
        accepted = True
    except MalformedIntent:
        accepted = False
    assert (not errors(body, "intent")) is accepted, (body, errors(body, "intent"))


# --- real messages from an end-to-end run ------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("contract-data")
    t = date.fromisoformat(today())
    files = {
        "ops": operators_csv(d,
                         ["ct-op,active,2024-01-01,2030-12-31,+390844000001", "ct-susp,suspended,2024-01-01,2030-12-31,",
                          f"ct-old,active,2020-01-01,{t - timedelta(days=1)},"]),
        "reg": write_csv(d / "reg.csv", "number,status,registered_at",
                         [f"{N['opposed']},opposed,2024-02-01", f"{N['consent']},opposed,2024-02-01",
                          f"{N['contract']},opposed,"]),
        # a clear result loaded for every client ('*') is nobody's check: acme's own
        "acme": write_csv(d / "acme.csv", "number,status",
                          [f"{N['clear']},clear", f"{N['dnc']},clear", f"{N['dnc_consent']},clear"]),
        "stale": write_csv(d / "stale.csv", "number,status", [f"{N['stale']},opposed"]),
        "client": write_csv(d / "client.csv", "number,status", [f"{N['client_only']},clear"]),
        "consents": write_csv(d / "consents.csv", "callee,client_id,basis,granted_at,ends_at",
                              [f"{N['consent']},acme,consent,2025-03-01T10:00:00,2030-01-01",
                               f"{N['contract']},acme,contract,2023-01-01,",
                               f"{N['dnc_consent']},acme,consent,2025-06-01,"]),
        "optouts": write_csv(d / "optouts.csv", "callee,client_id,at",
                             [f"{N['dnc']},*,2025-05-05T12:00:00", f"{N['dnc_consent']},acme,2025-05-05"]),
    }  # fmt: skip
    for argv in (
        ("operators", "load", str(files["ops"])),
        ("register", "load", str(files["reg"]), "--as-of", str(t - timedelta(days=1))),
        ("register", "load", str(files["acme"]), "--as-of", str(t - timedelta(days=1)), "--client", "acme"),
        ("register", "load", str(files["stale"]), "--as-of", str(t - timedelta(days=20))),
        ("register", "load", str(files["client"]), "--as-of", str(t), "--client", "beta"),
        ("consents", "load", str(files["consents"])),
        ("optouts", "load", str(files["optouts"])),
    ):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr
    return N


def intents(numbers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """One intent per outcome the data can produce (every reason but lookup_unavailable)."""
    base = {"operator_id": "ct-op", "client_id": "acme"}
    cases: dict[str, dict[str, Any]] = {
        "ct-clear": {"callee": numbers["clear"], "requested_at": "2026-01-02T03:04:05+01:00", "caller_id": "+390844000001",
                     "campaign_id": "ct-campaign"},
        "ct-opposed": {"callee": numbers["opposed"]},
        "ct-consent": {"callee": numbers["consent"]},
        "ct-contract": {"callee": numbers["contract"]},
        "ct-stale": {"callee": numbers["stale"], "purpose": "survey"},
        "ct-dnc": {"callee": numbers["dnc"]},
        "ct-dnc-consent": {"callee": numbers["dnc_consent"]},
        "ct-unchecked": {"callee": numbers["unchecked"]},
        "ct-client-only": {"callee": numbers["client_only"], "client_id": "beta"},
        "ct-service": {"callee": numbers["unchecked"], "purpose": "service"},
        "ct-invalid": {"callee": "12345"},
        "ct-unknown-op": {"callee": numbers["clear"], "operator_id": "nobody"},
        "ct-many": {"callee": numbers["opposed"], "operator_id": "ct-susp"},
        "ct-expired": {"callee": numbers["clear"], "operator_id": "ct-old"},
        "ct-automated": {"callee": numbers["clear"], "automated": True},  # consent_required: no consent
    }  # fmt: skip
    return {intent_id: {"intent_id": intent_id, **base, **fields} for intent_id, fields in cases.items()}


MALFORMED = [
    b"\xff\xfe ct not utf-8",
    b'["ct", "not an object"]',
    b'{"intent_id": "ct-bad-missing", "operator_id": "ct-op", "client_id": "acme"}',
    b'{"intent_id": "ct-bad-purpose", "callee": "+393477000000", "operator_id": "ct-op", "client_id": "acme", "purpose": "x"}',
    b'{"intent_id": "ct-bad-big", "callee": "' + b"1" * 70_000 + b'"}',
]


async def read_keyed(broker_url: str, topic: str, keys: set[bytes], timeout: float = 30) -> dict[bytes, list[bytes]]:
    """Raw values of ``topic`` whose key is in ``keys`` (any other message, valid or not, is skipped)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap(broker_url), auto_offset_reset="earliest")
    await consumer.start()
    found: dict[bytes, list[bytes]] = {}
    deadline = time.monotonic() + timeout
    try:
        while not keys <= found.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key in keys:
                        found.setdefault(record.key, []).append(record.value)
    finally:
        await consumer.stop()
    return found


async def test_real_messages_validate_against_the_schemas(loaded: dict[str, str], worker: Worker, embedded) -> None:
    broker = embedded.broker_url
    sent = intents(loaded)
    for body in sent.values():
        validate(body, "intent")
    await produce(broker, INTENTS_TOPIC, [orjson.dumps(body) for body in sent.values()] + MALFORMED)
    bad_optout = orjson.dumps({"callee": "not a number", "client_id": "acme", "marker": "ct-bad-optout"})
    await produce(broker, OPTOUTS_TOPIC, [bad_optout])

    # the client's own messages: an intent, an outcome and an opt-out, read back from their topics
    async with GuardClient(broker, timeout=30, intent_prefix="ct-client-") as guard:
        checked = await guard.check(loaded["clear"], "ct-op", "acme", "survey", campaign_id="ct-campaign",
                                    requested_at=datetime.now(UTC))  # fmt: skip
        assert isinstance(checked, GuardDecision) and checked.allowed
        await guard.report_outcome(checked.intent_id, "no_answer")
        await guard.opt_out("347 7" + loaded["optout_target"][-6:], "beta", at=date(2025, 1, 2))
        await guard.opt_out(loaded["optout_target"])
    key = checked.intent_id.encode()
    (intent,) = (await read_keyed(broker, INTENTS_TOPIC, {loaded["clear"].encode()}))[loaded["clear"].encode()][-1:]
    validate(orjson.loads(intent), "intent")
    (outcome,) = (await read_keyed(broker, OUTCOMES_TOPIC, {key}))[key]
    validate(orjson.loads(outcome), "outcome")
    target = loaded["optout_target"].encode()
    optouts = (await read_keyed(broker, OPTOUTS_TOPIC, {target}))[target]
    assert len(optouts) == 2
    for value in optouts:
        validate(orjson.loads(value), "optout")

    want = {*sent, "ct-bad-missing", "ct-bad-purpose", checked.intent_id}
    decisions = await collect(broker, DECISIONS_TOPIC, want)
    audits = await collect(broker, AUDIT_TOPIC, want)
    assert set(decisions) == set(audits) == want, worker.log_tail()
    reasons = set()
    for intent_id in want:
        validate(decisions[intent_id][0], "decision")
        validate(audits[intent_id][0], "audit")
        reasons.update(decisions[intent_id][0]["reasons"])
    # lookup_unavailable: tests/worker/test_http_check.py; the calling rules' reasons (this worker runs
    # the core policy): tests/system/test_calling_rules_e2e.py, which validates its decisions too;
    # campaign_silent_rate (off in the core policy): tests/system/test_italian_law_e2e.py; mandates,
    # caller IDs from abroad and call requests: tests/system/test_supply_chain_e2e.py; the US pack's and
    # no_policy_for_country: tests/system/test_us_e2e.py
    expected = (
        {r.value for r in Reason}
        - {"lookup_unavailable"}
        - CALLING_RULE_REASONS
        - ITALIAN_LAW_ONLY_REASONS
        - US_PACK_REASONS
    )
    assert reasons == expected
    assert audits["ct-bad-missing"][0]["intent"] is None

    raws = {base64.b64encode(value).decode() for value in [*MALFORMED, bad_optout]}
    dead = await collect(broker, DEADLETTER_TOPIC, raws, key="raw_base64")
    assert set(dead) == raws
    for letters in dead.values():
        validate(letters[0], "deadletter")
