"""The guard's shell (:class:`callguard.worker.guard.Guard`) against in-memory
stores and an in-memory broker: what it does with races, failures and bad
input, without Redis or Kafka. The Redis stores themselves are tested
against a real Redis (test_stores.py, test_cluster.py) and the whole worker
end to end (test_end_to_end.py, test_faults.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from callguard.core.audit import ChainHeads, Stored, verify
from callguard.core.facts import Consent, Facts, Mandate, Operator, OptOut, PastCall, RegisterResult, intent_ref
from callguard.core.policy import CapLimit, Decision, PolicySettings
from callguard.core.schema import AUDIT_TOPIC, DEADLETTER_TOPIC, DECISIONS_TOPIC, OutcomeReport, Reason
from callguard.storage.stores import Allowed, Query
from callguard.worker.guard import Guard, Raw
from callguard.worker.metrics import Metrics
from callguard.worker.ports import GuardStores

ROME = ZoneInfo("Europe/Rome")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=ROME).astimezone(UTC)  # a Friday noon: inside the calling hours
CALLEE = "+393475555555"
OTHER_CALLEE = "+393475555556"
CALLER = "+390212340000"
OPERATOR = Operator("op1", "active", date(2020, 1, 1), date(2030, 12, 31), (CALLER,))


class Down(Exception):
    """Redis or the broker not answering (the fakes' failure)."""


class FakeStores:
    """The stores in memory: every callee clear in a fresh register result,
    the operator certified and mandated, and the allowed calls kept per callee
    and client and counted against the caps like the record script does.
    ``failing[method]``: how many more calls of it raise before it answers."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], list[PastCall]] = {}
        self.optouts: list[tuple[str, OptOut]] = []
        self.consents: list[tuple[str, Consent]] = []
        self.remembered: dict[str, str] = {}  # intent_id -> campaign, for outcomes
        self.failing: dict[str, int] = {}
        self.recorded: list[list[Allowed]] = []  # what each record_allowed call was given
        self.lookups = 0
        #: calls another worker records between this guard's lookup and its record
        self.meanwhile: dict[tuple[str, str], list[PastCall]] = {}

    def _fail(self, method: str) -> None:
        if self.failing.get(method, 0) > 0:
            self.failing[method] -= 1
            raise Down(f"{method}: connection refused")

    async def lookup(self, queries: Sequence[Query], outcome_days: Sequence[date], /) -> list[Facts]:
        self._fail("lookup")
        self.lookups += 1
        facts = [self._facts(query) for query in queries]
        for key, calls in self.meanwhile.items():
            self.calls.setdefault(key, []).extend(calls)
        self.meanwhile = {}
        return facts

    def _facts(self, query: Query) -> Facts:
        as_of = NOW.astimezone(ROME).date()
        calls = tuple(self.calls.get((query.callee or "", query.client_id), ()))
        return Facts(
            OPERATOR,
            (RegisterResult(False, as_of, None, query.client_id),),
            calls=calls,
            listed=True,
            directory_as_of=as_of,
            mandates=(Mandate(query.client_id, "op1", date(2020, 1, 1), date(2030, 12, 31)),),
        )

    async def record_allowed(self, allowed: Sequence[Allowed], now: datetime, /) -> list[tuple[PastCall, ...] | None]:
        self._fail("record_allowed")
        self.recorded.append(list(allowed))
        replies: list[tuple[PastCall, ...] | None] = []
        for item in allowed:
            stored = self.calls.setdefault((item.callee, item.client_id), [])
            ref = intent_ref(item.intent_id)
            full = any(sum(call.at > now - window for call in stored) >= most for window, most in item.limits or ())
            if item.capped and not any(call.ref == ref for call in stored) and full:
                replies.append(tuple(stored))
                continue
            if item.capped and not any(call.ref == ref for call in stored):
                stored.append(PastCall(now, ref))
            self.remembered[item.intent_id] = item.campaign_id or "-"
            replies.append(None)
        return replies

    async def add_optouts(self, rows: Sequence[tuple[str, OptOut]], /) -> int:
        self._fail("add_optouts")
        self.optouts += rows
        return len(rows)

    async def upsert_consents(self, rows: Sequence[tuple[str, Consent]], /) -> None:
        self._fail("upsert_consents")
        self.consents += rows

    async def apply_outcomes(self, outcomes: Sequence[tuple[OutcomeReport, bool]], tz: tzinfo, /) -> list[str | int]:
        self._fail("apply_outcomes")
        return [self.remembered.get(report.intent_id, 0) for report, _ in outcomes]


class FakeBroker:
    """``send`` for the guard: appends to per-partition logs. ``fail_after_write``
    sends write and then raise (the acknowledgement lost), ``fail_before_write``
    raise at once."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list[bytes]] = {}
        self.fail_after_write = 0
        self.fail_before_write = 0
        self.sends = 0
        self.tails_loaded: list[int] = []

    async def send(self, messages: Sequence[tuple[str, bytes | None, bytes, int | None]]) -> list[tuple[int, int]]:
        self.sends += 1
        if self.fail_before_write:
            self.fail_before_write -= 1
            raise Down("broker: not the leader")
        written = []
        for topic, _key, value, partition in messages:
            log = self.logs.setdefault((topic, partition or 0), [])
            log.append(value)
            written.append((partition or 0, len(log) - 1))
        if self.fail_after_write:
            self.fail_after_write -= 1
            raise Down("broker: request timed out")
        return written

    async def load_tail(self, partition: int) -> bytes | None:
        self.tails_loaded.append(partition)
        log = self.logs.get((AUDIT_TOPIC, partition), [])
        return log[-1] if log else None

    def read(self, topic: str) -> list[Any]:
        return [orjson.loads(value) for (t, _), log in sorted(self.logs.items()) if t == topic for value in log]

    def audit(self) -> list[Stored]:
        return [
            Stored(p, offset, value)
            for (t, p), log in sorted(self.logs.items())
            if t == AUDIT_TOPIC
            for offset, value in enumerate(log)
        ]


def guard(stores: GuardStores, broker: FakeBroker, policy: PolicySettings | None = None, partitions: int = 1) -> Guard:
    return Guard(
        stores,
        broker.send,
        policy or PolicySettings(),
        "IT",
        Metrics(process=False),
        clock=lambda: NOW,
        chain=ChainHeads(broker.load_tail),
        audit_partitions=partitions,
    )


def intent(intent_id: str, callee: str = CALLEE, client: str = "acme", **fields: Any) -> dict[str, Any]:
    return {
        "intent_id": intent_id,
        "callee": callee,
        "operator_id": "op1",
        "client_id": client,
        "purpose": "marketing",
        "caller_id": CALLER,
        **fields,
    }


def raws(*values: dict[str, Any] | bytes | None, partition: int = 0) -> list[Raw]:
    return [
        Raw(
            value if value is None or isinstance(value, bytes) else orjson.dumps(value),
            "callguard.intents",
            partition,
            n,
        )
        for n, value in enumerate(values)
    ]


def by_id(decisions: Sequence[Decision]) -> dict[str, Decision]:
    return {d.intent_id: d for d in decisions}


def published(broker: FakeBroker) -> dict[str, dict[str, Any]]:
    return {message["intent_id"]: message for message in broker.read(DECISIONS_TOPIC)}


def one_a_day() -> PolicySettings:
    """The Italian policy with one call per callee and client a day."""
    return replace(PolicySettings(), frequency_limits=(CapLimit(timedelta(hours=24), 1),))


# --- frequency caps -------------------------------------------------------------------


async def test_two_intents_in_one_batch_share_the_cap() -> None:
    """The second intent to the same callee and client in one batch counts the
    first one's allow: denied by the guard itself, not by the record script."""
    stores, broker = FakeStores(), FakeBroker()
    g = guard(stores, broker, one_a_day())
    decided = by_id(await g.handle_intents(raws(intent("a"), intent("b"), intent("c", OTHER_CALLEE))))
    assert decided["a"].allow and decided["c"].allow
    assert not decided["b"].allow and decided["b"].reasons == (Reason.FREQUENCY_CAP,)
    assert [item.intent_id for item in stores.recorded[0]] == ["a", "c"]  # the deny is never recorded
    assert g.metrics.cap_races._value.get() == 0  # no other worker involved
    assert published(broker)["b"]["decision"] == "deny"


async def test_an_allow_is_decided_again_when_another_worker_filled_the_cap() -> None:
    """Between the lookup and the record another worker allowed a call: the
    record script refuses, and the allow becomes a frequency-cap deny."""
    stores, broker = FakeStores(), FakeBroker()
    stores.meanwhile[(CALLEE, "acme")] = [PastCall(NOW - timedelta(minutes=1), intent_ref("elsewhere"))]
    g = guard(stores, broker, one_a_day())
    [decision] = await g.handle_intents(raws(intent("a")))
    assert not decision.allow and decision.reasons == (Reason.FREQUENCY_CAP,)
    assert g.metrics.cap_races._value.get() == 1
    assert published(broker)["a"]["decision"] == "deny"
    assert stores.calls[(CALLEE, "acme")] == [PastCall(NOW - timedelta(minutes=1), intent_ref("elsewhere"))]


async def test_a_redelivered_intent_keeps_its_allow() -> None:
    """An intent allowed and recorded, then redelivered (its offset was not
    committed), finds itself among the calls: the same allow, counted once."""
    stores, broker = FakeStores(), FakeBroker()
    g = guard(stores, broker, one_a_day())
    first = await g.handle_intents(raws(intent("a")))
    again = await g.handle_intents(raws(intent("a")))
    assert first[0].allow and again[0].allow
    assert len(stores.calls[(CALLEE, "acme")]) == 1


# --- failures: fail closed, drop nothing ------------------------------------------------


async def test_redis_down_denies_the_whole_batch_lookup_unavailable() -> None:
    stores, broker = FakeStores(), FakeBroker()
    stores.failing["lookup"] = 1
    g = guard(stores, broker)
    decided = await g.handle_intents(raws(intent("a"), intent("b", OTHER_CALLEE)))
    assert [(d.allow, d.reasons, d.retryable) for d in decided] == [(False, (Reason.LOOKUP_UNAVAILABLE,), True)] * 2
    assert stores.recorded == []  # nothing allowed, nothing counted
    assert {m["intent_id"]: m["reasons"] for m in broker.read(DECISIONS_TOPIC)} == {
        "a": ["lookup_unavailable"],
        "b": ["lookup_unavailable"],
    }
    assert g.metrics.totals.lookup_errors == 1
    # Redis back: the next batch is decided on its facts
    assert (await g.handle_intents(raws(intent("c"))))[0].allow


async def test_a_failed_record_turns_the_allows_into_lookup_unavailable() -> None:
    """An allow that could not be counted would break the caps: it becomes a
    retryable ``lookup_unavailable`` deny; the batch's other denies keep their reasons."""
    stores, broker = FakeStores(), FakeBroker()
    stores.failing["record_allowed"] = 1
    g = guard(stores, broker)
    decided = by_id(await g.handle_intents(raws(intent("a"), intent("b", "12"))))
    assert not decided["a"].allow and decided["a"].reasons == (Reason.LOOKUP_UNAVAILABLE,) and decided["a"].retryable
    assert decided["b"].reasons == (Reason.INVALID_NUMBER,) and not decided["b"].retryable
    assert published(broker)["a"]["decision"] == "deny"
    assert stores.calls.get((CALLEE, "acme"), []) == []


async def test_a_failed_publish_is_sent_again_chained_onto_what_the_broker_kept() -> None:
    """The broker wrote the batch but its answer was lost: the guard sends the
    whole batch again (at-least-once) after reloading the chain's heads, so
    the second copy links to the first and the audit chain stays intact."""
    stores, broker = FakeStores(), FakeBroker()
    g = guard(stores, broker, partitions=2)
    await g.handle_intents(raws(intent("a")))  # partition 0 has a head
    broker.fail_after_write = 1
    decided = await g.handle_intents(raws(intent("b"), intent("c", OTHER_CALLEE)))
    assert [d.intent_id for d in decided] == ["b", "c"]
    assert [m["intent_id"] for m in broker.read(DECISIONS_TOPIC)] == ["a", "b", "c", "b", "c"]
    assert broker.tails_loaded == [0, 0]  # once at start, once after the failure
    report = verify(broker.audit(), g.chain.acknowledged)
    assert report.problems == [] and report.records == {0: 5}
    assert g.metrics.publish_errors._value.get() == 1


async def test_a_publish_the_broker_refused_is_sent_again() -> None:
    stores, broker = FakeStores(), FakeBroker()
    g = guard(stores, broker)
    broker.fail_before_write = 2
    await g.handle_intents(raws(intent("a")))
    assert broker.sends == 3
    assert [m["intent_id"] for m in broker.read(DECISIONS_TOPIC)] == ["a"]
    assert verify(broker.audit(), g.chain.acknowledged).problems == []


# --- bad input ---------------------------------------------------------------------------


async def test_malformed_intents_go_to_the_dead_letters_and_get_a_deny_when_their_id_is_readable() -> None:
    stores, broker = FakeStores(), FakeBroker()
    g = guard(stores, broker)
    batch = raws(b"{not json", {**intent("bad"), "purpose": "spam"}, intent("good"), None)
    decided = by_id(await g.handle_intents(batch))
    assert set(decided) == {"bad", "good"}
    assert decided["bad"].reasons == (Reason.MALFORMED_INTENT,) and not decided["bad"].retryable
    assert decided["good"].allow
    letters = broker.read(DEADLETTER_TOPIC)
    assert [(letter["intent_id"], letter["source"]["offset"]) for letter in letters] == [
        (None, 0),
        ("bad", 1),
        (None, 3),
    ]
    assert "purpose" in letters[1]["error"]
    assert set(published(broker)) == {"bad", "good"}
    assert [record["intent_id"] for record in broker.read(AUDIT_TOPIC)] == ["bad", "good"]
    assert stores.lookups == 1 and [q.intent_id for q in stores.recorded[0]] == ["good"]
    assert g.metrics.totals.deadletters == 3


@pytest.mark.parametrize("failing", [None, "lookup", "record_allowed"])
async def test_every_intent_gets_a_decision_or_a_dead_letter(failing: str | None) -> None:
    """Whatever fails, each message of a batch ends as one published decision
    (valid, or malformed with a readable id) or one dead letter (unreadable),
    and every decision has its audit record."""
    stores, broker = FakeStores(), FakeBroker()
    if failing:
        stores.failing[failing] = 1
    g = guard(stores, broker, one_a_day())
    batch = raws(
        intent("a"),
        intent("a"),  # a duplicate in the batch
        intent("b"),  # the cap: the same callee and client
        intent("c", "not a number"),
        intent("d", OTHER_CALLEE, client="other"),
        {"intent_id": "e"},
        b"\xff\xfe",
        b"[]",
    )
    decided = await g.handle_intents(batch)
    assert sorted(d.intent_id for d in decided) == ["a", "a", "b", "c", "d", "e"]
    assert sorted(m["intent_id"] for m in broker.read(DECISIONS_TOPIC)) == ["a", "a", "b", "c", "d", "e"]
    assert sorted(r["intent_id"] for r in broker.read(AUDIT_TOPIC)) == ["a", "a", "b", "c", "d", "e"]
    assert len(broker.read(DEADLETTER_TOPIC)) == 3  # e, and the two without an id
    assert verify(broker.audit(), g.chain.acknowledged).problems == []
    assert not any(d.allow for d in decided if d.intent_id in "bce")


# --- opt-outs, consents, outcomes: retried until Redis answers ---------------------------------


async def test_optouts_and_consents_are_retried_until_redis_answers() -> None:
    stores, broker = FakeStores(), FakeBroker()
    stores.failing.update(add_optouts=2, upsert_consents=1)
    g = guard(stores, broker)
    optouts = [
        Raw(orjson.dumps({"callee": CALLEE, "client_id": "acme", "at": "2026-11-01"}), "callguard.optouts", 0, 0),
        Raw(b"{}", "callguard.optouts", 0, 1),
    ]
    assert await g.handle_optouts(optouts) == 1
    assert stores.optouts == [(CALLEE, OptOut("acme", date(2026, 11, 1)))]
    consent = {"callee": CALLEE, "client_id": "acme", "basis": "consent", "granted_at": "2026-01-02T10:00:00"}
    assert await g.handle_consents([Raw(orjson.dumps(consent), "callguard.consents", 0, 0)]) == 1
    assert stores.consents == [
        (CALLEE, Consent("acme", "consent", datetime(2026, 1, 2, 10, 0, tzinfo=PolicySettings().timezone)))
    ]
    assert g.metrics.redis_errors.labels("optouts")._value.get() == 2
    assert [letter["source"]["offset"] for letter in broker.read(DEADLETTER_TOPIC)] == [1]


async def test_outcomes_of_unknown_intents_go_to_the_dead_letters() -> None:
    stores, broker = FakeStores(), FakeBroker()
    g = guard(stores, broker)
    await g.handle_intents(raws(intent("a", campaign_id="spring")))
    stores.failing["apply_outcomes"] = 1
    outcomes = [
        Raw(
            orjson.dumps({"intent_id": i, "outcome": "answered", "at": "2026-11-27T11:00:00Z"}),
            "callguard.outcomes",
            0,
            n,
        )
        for n, i in enumerate(("a", "never-allowed"))
    ]
    assert await g.handle_outcomes(outcomes) == 1
    assert [letter["intent_id"] for letter in broker.read(DEADLETTER_TOPIC)] == ["never-allowed"]
