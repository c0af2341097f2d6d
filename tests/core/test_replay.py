"""The pure replay: an audit record holds everything its decision used, so
deciding it again under the same policy gives the same record, whatever the
facts; records that lack a fact, and policies that need facts the guard did
not read, are not replayable, with the reason."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from callguard.core.facts import Consent, Facts, Mandate, Operator, OptOut, PastCall, RegisterResult, intent_ref
from callguard.core.numbers import normalise, normalise_caller_id
from callguard.core.policy import CapLimit, PolicySettings, RuleScope, decide, malformed
from callguard.core.policyfile import load_policy, parse_policy, shipped_policy
from callguard.core.replay import (
    NotReplayable,
    Replay,
    facts_from_audit,
    inputs_from_audit,
    intent_from_audit,
    redecide,
)
from callguard.core.schema import Intent, Purpose
from tests.conftest import OPEN_HOURS_POLICY
from tests.contract.validation import validate

ROME = ZoneInfo("Europe/Rome")
START = datetime(2025, 6, 1, tzinfo=UTC)
CALLEES = ["+39 347 555 0001", "+39 02 1234 5678", "+39 06 9876 5432", "+79161234567", "12", "+39 081 555 1234"]
CALLERS = [None, "private", "+39 0844 000111", "+39 0843 000111", "+39 02 1234 0111", "+39 347 000 0111", "800 123456"]


def _when(rng: random.Random, around: datetime) -> date | datetime:
    moment = around + timedelta(seconds=rng.randint(-60 * 86400, 5 * 86400), microseconds=rng.randint(0, 999_999))
    return moment.astimezone(ROME).date() if rng.random() < 0.5 else moment


def _case(rng: random.Random, n: int) -> tuple[Intent, str | None, Facts | None, datetime, str | None]:
    now = START + timedelta(seconds=rng.randint(0, 300 * 86400), milliseconds=rng.randint(0, 999))
    today = now.astimezone(ROME).date()
    intent = Intent(
        f"r-{n}",
        rng.choice(CALLEES),
        rng.choice(["op1", "op2"]),
        rng.choice(["acme", "beta"]),
        rng.choice(list(Purpose)),
        rng.choice(CALLERS),
        rng.choice([None, "camp-1", "camp-2"]),
        automated=rng.random() < 0.3,
        script_id=rng.choice([None, "s-1"]),
        list_source=rng.choice([None, "directory"]),
    )
    callee = normalise(intent.callee, "IT")
    caller = normalise_caller_id(intent.caller_id, "IT")
    if rng.random() < 0.05:
        return intent, callee, None, now, caller
    operator = None
    if rng.random() < 0.9:
        operator = Operator(
            intent.operator_id,
            rng.choice(["active", "active", "active", "suspended", "revoked"]),
            today - timedelta(days=rng.randint(-3, 400)),
            today + timedelta(days=rng.randint(-3, 400)),
            tuple(c for c in ("+390844000111", "+390212340111", "+39800123456") if rng.random() < 0.7),
            rng.choice(["IT", "IT", "AL"]),
        )
    mandates = tuple(
        Mandate(intent.client_id, intent.operator_id, today - timedelta(days=rng.randint(-5, 100)),
                today + timedelta(days=rng.randint(-5, 100)))
        for _ in range(rng.randint(0, 2))
    )  # fmt: skip
    register = tuple(
        RegisterResult(
            rng.random() < 0.5,
            today - timedelta(days=rng.randint(0, 20)),
            rng.choice([None, today - timedelta(days=rng.randint(0, 400))]),
            rng.choice(["*", intent.client_id]),
        )
        for _ in range(rng.randint(0, 2))
    )
    consents = tuple(
        Consent(
            intent.client_id,
            rng.choice(["consent", "contract", "request"]),
            _when(rng, now),
            rng.choice([None, _when(rng, now)]),
        )
        for _ in range(rng.randint(0, 3))
    )
    optouts = tuple(OptOut(rng.choice(["*", intent.client_id]), _when(rng, now)) for _ in range(rng.randint(0, 2)))
    own = (
        [PastCall(now - timedelta(minutes=rng.randint(0, 60)), intent_ref(intent.intent_id))]
        if rng.random() < 0.1
        else []
    )
    calls = tuple(
        sorted(
            [PastCall(now - timedelta(hours=rng.randint(-1, 800), milliseconds=rng.randint(0, 999)), f"{k:010x}")
             for k in range(rng.randint(0, 12))] + own,
            key=lambda c: c.at,
        )
    )  # fmt: skip
    silent = rng.choice([None, now - timedelta(days=rng.randint(0, 10), seconds=rng.randint(0, 86400))])
    outcomes = rng.choice([None, {}, {"answered": rng.randint(0, 200), "silent": rng.randint(0, 8), "abandoned": 1}])
    facts = Facts(
        operator,
        register,
        consents,
        optouts,
        {"operators": "ops-v1", "mandates": rng.choice([None, "m-v1"])},
        calls,
        silent,
        listed=rng.random() < 0.6,
        directory_as_of=rng.choice([None, today - timedelta(days=rng.randint(0, 20))]),
        campaign_outcomes=outcomes,
        mandates=mandates,
    )
    return intent, callee, facts, now, caller


def _policies() -> list[PolicySettings]:
    shipped = shipped_policy("it")
    strict = replace(shipped, caller_id_require_prefix=True, version="strict")
    return [shipped, load_policy(OPEN_HOURS_POLICY), strict]


def _record(decision: Any, intent: Intent | None) -> dict[str, Any]:
    record = decision.to_audit(intent, {"topic": "callguard.intents", "partition": 0, "offset": 1})
    return orjson.loads(orjson.dumps(record))  # as read back from the topic


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.version)
def test_every_decision_is_reproduced_whole_from_its_audit_record(policy: PolicySettings):
    rng = random.Random(17)
    kinds: set[tuple[bool, tuple[str, ...]]] = set()
    for n in range(1500):
        intent, callee, facts, now, caller = _case(rng, n)
        decision = decide(intent, callee, facts, now, policy, caller)
        record = _record(decision, intent)
        validate(record, "audit")
        again = redecide(record, policy)
        # the whole record, not just the verdict: rules, details, facts and versions
        assert _record(again, intent) == record, intent
        kinds.add((decision.allow, decision.reasons))
    assert len(kinds) > 30  # the cases reach many outcomes


def test_a_malformed_intent_is_replayed_as_malformed():
    policy = shipped_policy("it")
    now = datetime(2026, 1, 5, 10, tzinfo=UTC)
    record = _record(malformed("m-1", "missing field 'callee'", now, policy), None)
    assert _record(redecide(record, policy), None) == record


def _sample(policy: PolicySettings | None = None, **changes: Any) -> dict[str, Any]:
    policy = policy or shipped_policy("it")
    rng = random.Random(3)
    while True:
        intent, callee, facts, now, caller = _case(rng, 0)
        if callee is not None and facts is not None and callee.startswith("+39"):
            return _record(decide(intent, callee, replace(facts, **changes), now, policy, caller), intent)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (("facts", "calls"), "facts.calls missing"),
        (("facts", "silent_at"), "facts.silent_at missing"),
        (("facts", "campaign_outcomes"), "facts.campaign_outcomes missing"),
        (("facts", "mandates"), "facts.mandates missing"),
        (("facts", "caller"), "facts.caller missing"),
        (("facts", "lookback"), "facts.lookback missing"),
        (("facts", "operator", "caller_ids"), "facts.operator.caller_ids missing"),
        (("intent", "automated"), "intent.automated missing"),
    ],
)
def test_an_older_record_is_not_replayable_and_says_what_it_lacks(path: tuple[str, ...], reason: str):
    record = _sample()
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(NotReplayable, match=reason) as caught:
        redecide(record, shipped_policy("it"))
    assert str(caught.value).startswith("not replayable: ")


def test_records_that_are_no_decision_are_not_replayable():
    replay = Replay(shipped_policy("it"))
    replay.add_bytes(b"not json")
    replay.add_bytes(b"[1]")
    replay.add({"intent_id": "x"})
    assert replay.records == 3 and replay.replayed == 0
    assert replay.not_replayable == {"not JSON": 1, "not a JSON object": 1, "not an audit record of a decision": 1}


def test_a_policy_needing_facts_the_guard_did_not_read_is_not_replayed():
    shipped = shipped_policy("it")
    record = _sample(shipped)
    assert record["facts"]["lookback"] == {
        "calls_hours": 720.0,
        "calls_purposes": ["marketing", "statistical", "survey"],
        "outcome_days": 30,
    }
    record["intent"]["purpose"] = "marketing"
    longer = replace(shipped, frequency_limits=(CapLimit(timedelta(days=60), 10),))
    with pytest.raises(NotReplayable, match=r"past calls were read over 720\.0 h, the policy counts them over 1440 h"):
        redecide(record, longer)
    scopes = dict(shipped.scopes)
    scopes["frequency_cap"] = RuleScope(purposes=frozenset(Purpose))
    with pytest.raises(NotReplayable, match="calls of purpose service were not counted"):
        redecide(record, replace(shipped, scopes=scopes))
    with pytest.raises(NotReplayable, match="counted over 30 days, the policy counts 7"):
        redecide(record, replace(shipped, silent_rate_window_days=7))
    core = parse_policy('base = "it"\nversion = "no-rate"\n[rules.campaign_silent_rate]\nenabled = false\n')
    unlooked = _sample(core, campaign_outcomes=None)  # the guard does not look them up with the rule off
    unlooked["intent"]["purpose"] = "marketing"
    assert unlooked["facts"]["campaign_outcomes"] is None
    with pytest.raises(NotReplayable, match="campaign outcomes were not looked up"):
        redecide(unlooked, shipped)
    redecide(unlooked, core)  # under its own policy it replays


def test_the_pieces_rebuild_what_decide_was_given():
    rng = random.Random(5)
    policy = shipped_policy("it")
    for n in range(200):
        intent, callee, facts, now, caller = _case(rng, n)
        record = _record(decide(intent, callee, facts, now, policy, caller), intent)
        inputs = inputs_from_audit(record)
        assert inputs.decided_at == now and inputs.caller == (caller if facts is not None else None)
        rebuilt, rebuilt_callee = intent_from_audit(record)
        assert rebuilt_callee == callee
        assert replace(rebuilt, callee=intent.callee) == intent
        got = facts_from_audit(record)
        if facts is None:
            assert got is None
        elif callee is not None:
            assert replace(got, versions=facts.versions) == facts  # type: ignore[arg-type]


def test_a_stricter_policy_shows_the_changes_by_kind_reason_client_and_campaign():
    shipped = load_policy(OPEN_HOURS_POLICY)
    stricter = replace(shipped, frequency_limits=(CapLimit(timedelta(hours=24), 1), CapLimit(timedelta(days=30), 10)))
    stricter = replace(stricter, version="stricter")
    rng = random.Random(11)
    replay = Replay(stricter)
    same = Replay(shipped)
    for n in range(2000):
        intent, callee, facts, now, caller = _case(rng, n)
        record = _record(decide(intent, callee, facts, now, shipped, caller), intent)
        same.add(record)
        replay.add(record)
    assert same.changed == 0 and same.not_replayable_count == 0 and same.replayed == 2000
    summary = replay.to_json()
    assert summary["allow_to_deny"] > 0 and summary["deny_to_allow"] == 0
    assert set(summary["by_reason"]["allow->deny"]) == {"frequency_cap"}
    assert sum(summary["by_client"]["allow->deny"].values()) == summary["allow_to_deny"]
    example = summary["examples"]["allow->deny"][0]
    assert example["recorded"]["decision"] == "allow" and example["replayed"]["decision"] == "deny"
    assert all("*" in e["callee"] for e in summary["examples"]["allow->deny"])  # numbers masked
    assert replay.changes["other"] > replay.examples_per_kind == len(summary["examples"]["other"])  # at most 3
    text = "\n".join(replay.lines())
    assert "and 0 more" not in text  # a list cut short says how many it left out, and only then
    assert text.endswith(replay.summary()) and "allow -> deny" in text
