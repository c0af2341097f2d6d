"""Table tests of the supply-chain rules and the person's own word: mandates,
call requests, caller IDs shown from abroad; every boundary on both sides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callguard.core.facts import Consent, Facts, Mandate, Operator, OptOut, PastCall, RegisterResult, intent_ref
from callguard.core.policy import PolicySettings, RuleScope, decide
from callguard.core.schema import Intent, Purpose, Reason

ROME = ZoneInfo("Europe/Rome")
NOW = datetime(2026, 11, 27, 15, 0, tzinfo=ROME).astimezone(UTC)  # a Friday
TODAY = date(2026, 11, 27)
CALLEE = "+393475555555"
CLIENT = "acme"
FIXED_CALLER = "+390212340000"
MOBILE_CALLER = "+393401234567"
OPERATOR = Operator(
    "op1", "active", date(2020, 1, 1), date(2030, 12, 31), (FIXED_CALLER, MOBILE_CALLER, "+41441234567")
)
MANDATE = Mandate(CLIENT, "op1", date(2026, 1, 1), date(2026, 12, 31))
THESE = (
    "callee_number",
    "operator_certified",
    "operator_mandated",
    "opposition_register",
    "directory",
    "automated_calls",
    "internal_dnc",
    "caller_id",
)
SETTINGS = replace(
    PolicySettings(),
    scopes={n: s if n in THESE else RuleScope(enabled=False) for n, s in PolicySettings().scopes.items()},
)


def intent(purpose: Purpose = Purpose.MARKETING, caller: str = FIXED_CALLER, intent_id: str = "i-1") -> Intent:
    return Intent(intent_id, CALLEE, "op1", CLIENT, purpose, caller, "camp")


def facts(
    register: tuple[RegisterResult, ...] = (RegisterResult(False, TODAY, None, CLIENT),),
    consents: tuple[Consent, ...] = (),
    mandates: tuple[Mandate, ...] = (MANDATE,),
    operator: Operator = OPERATOR,
    optouts: tuple[OptOut, ...] = (),
    **more: object,
) -> Facts:
    return Facts(
        operator,
        register,
        consents,
        optouts,
        {},
        listed=True,
        directory_as_of=TODAY,
        mandates=mandates,
        **more,  # type: ignore[arg-type]
    )


def run(f: Facts, i: Intent | None = None, now: datetime = NOW, settings: PolicySettings = SETTINGS):
    i = i or intent()
    return decide(i, CALLEE, f, now, settings, i.caller_id)


def rule(decision, name: str):
    return next(r for r in decision.rules if r.rule == name)


# --- mandates (Codice di condotta art. 6, 7, 14, 17) ------------------------------------


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "mandated"),
    [
        (date(2026, 1, 1), date(2026, 12, 31), True),
        (TODAY, TODAY, True),  # both ends included
        (TODAY + timedelta(days=1), date(2026, 12, 31), False),
        (date(2026, 1, 1), TODAY - timedelta(days=1), False),
    ],
)
def test_a_mandate_in_force_today(valid_from, valid_until, mandated):
    d = run(facts(mandates=(Mandate(CLIENT, "op1", valid_from, valid_until),)))
    assert d.reasons == (() if mandated else (Reason.OPERATOR_NOT_MANDATED,))


def test_no_mandate_denies_and_another_period_can_hold():
    assert run(facts(mandates=())).reasons == (Reason.OPERATOR_NOT_MANDATED,)
    old = Mandate(CLIENT, "op1", date(2024, 1, 1), date(2024, 12, 31))
    assert run(facts(mandates=(old,))).reasons == (Reason.OPERATOR_NOT_MANDATED,)
    assert run(facts(mandates=(old, MANDATE))).allow


def test_the_mandate_day_is_the_italian_day():
    # 23:30 UTC on 27 Nov is 28 Nov in Rome: a mandate that ended on the 27th is over
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    ends_today = (Mandate(CLIENT, "op1", date(2026, 1, 1), TODAY),)
    assert run(facts(mandates=ends_today), now=late - timedelta(hours=1)).allow
    assert run(facts(mandates=ends_today), now=late).reasons == (Reason.OPERATOR_NOT_MANDATED,)


def test_service_calls_need_no_mandate_unless_the_policy_says_so():
    assert rule(run(facts(mandates=()), intent(Purpose.SERVICE)), "operator_mandated").outcome == "skipped"
    scopes = {**SETTINGS.scopes, "operator_mandated": RuleScope(purposes=frozenset(Purpose))}
    d = run(facts(mandates=()), intent(Purpose.SERVICE), settings=replace(SETTINGS, scopes=scopes))
    assert d.reasons == (Reason.OPERATOR_NOT_MANDATED,)


def test_the_mandate_rule_can_be_switched_off():
    scopes = {**SETTINGS.scopes, "operator_mandated": RuleScope(enabled=False)}
    assert run(facts(mandates=()), settings=replace(SETTINGS, scopes=scopes)).allow


# --- the person asked to be called (art. 10 c. 2-3) ------------------------------------

REQUEST_DAY = Consent(CLIENT, "request", TODAY)


def test_a_request_lifts_the_register_and_the_directory_for_that_client():
    for register in ((), (RegisterResult(True, TODAY, date(2024, 1, 1), CLIENT),)):
        d = run(replace(facts(register, (REQUEST_DAY,)), listed=False))
        assert d.allow and d.reasons == (Reason.REQUEST,), register
    stale = (RegisterResult(False, TODAY - timedelta(days=40), None, CLIENT),)
    assert run(facts(stale, (REQUEST_DAY,))).reasons == (Reason.REQUEST,)
    other = Consent("beta", "request", TODAY)
    assert run(facts((), (other,))).reasons == (Reason.NOT_CHECKED,)


@pytest.mark.parametrize(
    ("granted", "counts"),
    [
        (TODAY, True),
        (TODAY - timedelta(days=1), True),  # day D and D+1
        (TODAY - timedelta(days=2), False),
        (NOW - timedelta(days=2) + timedelta(milliseconds=1), True),  # 48 hours from an instant
        (NOW - timedelta(days=2), False),
        (TODAY + timedelta(days=1), False),  # not yet
    ],
)
def test_a_request_without_an_end_counts_two_days(granted, counts):
    d = run(facts((), (Consent(CLIENT, "request", granted),)))
    assert d.reasons == ((Reason.REQUEST,) if counts else (Reason.NOT_CHECKED,))


def test_a_request_with_an_end_counts_until_then():
    ends = Consent(CLIENT, "request", TODAY - timedelta(days=10), TODAY)
    assert run(facts((), (ends,))).reasons == (Reason.REQUEST,)
    ended = Consent(CLIENT, "request", TODAY - timedelta(days=10), TODAY - timedelta(days=1))
    assert run(facts((), (ended,))).reasons == (Reason.NOT_CHECKED,)


def test_a_request_is_for_one_call():
    asked = NOW - timedelta(hours=2)
    request = Consent(CLIENT, "request", asked)
    before = PastCall(asked - timedelta(milliseconds=1), "aaaaaaaaaa")
    after = PastCall(asked, "bbbbbbbbbb")
    assert run(facts((), (request,), calls=(before,))).reasons == (Reason.REQUEST,)
    assert run(facts((), (request,), calls=(after,))).reasons == (Reason.NOT_CHECKED,)
    # the intent itself (a redelivery) does not use it up
    own = PastCall(NOW, intent_ref("i-1"))
    assert run(facts((), (request,), calls=(own,))).reasons == (Reason.REQUEST,)
    # a request known only by its day: a call that day may have followed it
    same_day = PastCall(datetime(2026, 11, 27, 8, 0, tzinfo=ROME).astimezone(UTC), "cccccccccc")
    assert run(facts((), (REQUEST_DAY,), calls=(same_day,))).reasons == (Reason.NOT_CHECKED,)


def test_an_opt_out_after_the_request_still_denies():
    asked = NOW - timedelta(hours=2)
    request = Consent(CLIENT, "request", asked)
    later = OptOut(CLIENT, asked + timedelta(minutes=1))
    earlier = OptOut(CLIENT, asked - timedelta(minutes=1))
    assert run(facts((), (request,), optouts=(later,))).reasons == (Reason.INTERNAL_DNC,)
    d = run(facts((), (request,), optouts=(earlier,)))
    assert d.allow and d.reasons == (Reason.REQUEST,)


def test_a_request_is_no_consent_to_an_automated_call():
    i = replace(intent(), automated=True)
    assert run(facts((), (REQUEST_DAY,)), i).reasons == (Reason.CONSENT_REQUIRED,)


# --- caller IDs shown from abroad (AGCOM) -----------------------------------------------


ABROAD = replace(OPERATOR, country="AL")


@pytest.mark.parametrize(
    ("caller", "day", "blocked"),
    [
        (FIXED_CALLER, date(2025, 8, 18), False),
        (FIXED_CALLER, date(2025, 8, 19), True),
        (MOBILE_CALLER, date(2025, 11, 18), False),
        (MOBILE_CALLER, date(2025, 11, 19), True),
        ("+41441234567", date(2026, 11, 27), False),  # a foreign number from abroad is not the block's business
    ],
)
def test_an_operator_abroad_showing_an_italian_number(caller, day, blocked):
    now = datetime(day.year, day.month, day.day, 12, 0, tzinfo=ROME).astimezone(UTC)
    mandate = Mandate(CLIENT, "op1", date(2020, 1, 1), date(2030, 1, 1))
    register = (RegisterResult(False, day, None, CLIENT),)
    f = replace(facts(register, mandates=(mandate,), operator=ABROAD), directory_as_of=day)
    d = run(f, intent(caller=caller), now=now)
    assert d.reasons == ((Reason.CALLER_ID_FOREIGN_ORIGIN,) if blocked else ())
    assert run(replace(f, operator=OPERATOR), intent(caller=caller), now=now).allow  # from Italy: fine


def test_the_block_starts_at_italian_midnight():
    mandate = Mandate(CLIENT, "op1", date(2020, 1, 1), date(2030, 1, 1))
    register = (RegisterResult(False, date(2025, 8, 19), None, CLIENT),)
    f = replace(facts(register, mandates=(mandate,), operator=ABROAD), directory_as_of=date(2025, 8, 19))
    just_before = datetime(2025, 8, 18, 21, 59, 59, tzinfo=UTC)  # 23:59:59 in Rome (CEST)
    midnight = datetime(2025, 8, 18, 22, 0, tzinfo=UTC)
    assert run(f, now=just_before).allow
    assert run(f, now=midnight).reasons == (Reason.CALLER_ID_FOREIGN_ORIGIN,)


def test_script_and_list_source_are_kept_as_evidence():
    i = replace(intent(), script_id="script-7", list_source="directory")
    record = run(facts(), i).to_audit(i, {})
    assert record["intent"]["script_id"] == "script-7" and record["intent"]["list_source"] == "directory"


def test_an_operators_country_is_stored_only_when_not_italy():
    from callguard.storage.stores import _operator, operator_value

    italian = replace(OPERATOR, country="IT")
    assert operator_value(italian).count("|") == 3  # what a worker of an earlier version reads
    assert _operator("op1", operator_value(italian)) == italian
    assert _operator("op1", operator_value(ABROAD)) == ABROAD
