"""Table tests of the Italian calling rules (caller ID, calling hours, frequency
caps, silent calls) through the pure policy, at their boundaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callguard.core.facts import Facts, Mandate, Operator, PastCall, RegisterResult, intent_ref
from callguard.core.hours import LocalHoliday
from callguard.core.numbers import normalise_caller_id
from callguard.core.policy import RULES, CapLimit, PolicySettings, RuleScope, decide
from callguard.core.schema import Intent, Purpose, Reason

ROME = ZoneInfo("Europe/Rome")
MOBILE = "+393475555555"
MILAN = "+390212345678"  # a Milan district landline
DECLARED = ("+390212340000", "+390844123456", "+390843123456", "+39800123456")
OPERATOR = Operator("op1", "active", date(2020, 1, 1), date(2030, 12, 31), DECLARED)
POLICY = PolicySettings()


def rome(*args: int) -> datetime:
    return datetime(*args, tzinfo=ROME).astimezone(UTC)


FRIDAY_NOON = rome(2026, 11, 27, 12, 0)


def intent(
    caller_id: str | None = "+39 02 1234 0000",
    purpose: Purpose = Purpose.MARKETING,
    intent_id: str = "i-1",
    client: str = "acme",
) -> Intent:
    return Intent(intent_id, MOBILE, "op1", client, purpose, caller_id)


def facts(
    at: datetime = FRIDAY_NOON,
    calls: tuple[PastCall, ...] = (),
    silent_at: datetime | None = None,
    client: str = "acme",
    campaign_outcomes: dict[str, int] | None = None,
) -> Facts:
    """A listed number with a fresh clear result of ``client``: only the calling rules can deny."""
    as_of = at.astimezone(ROME).date()
    register = (RegisterResult(False, as_of, None, client),)
    return Facts(
        OPERATOR,
        register,
        (),
        (),
        {},
        calls,
        silent_at,
        listed=True,
        directory_as_of=as_of,
        campaign_outcomes=campaign_outcomes,
        mandates=(Mandate(client, "op1", date(2020, 1, 1), date(2030, 12, 31)),),
    )


def run(
    i: Intent | None = None,
    now: datetime = FRIDAY_NOON,
    callee: str = MOBILE,
    policy: PolicySettings = POLICY,
    f: Facts | None = None,
):
    i = i or intent()
    return decide(i, callee, f or facts(now), now, policy, normalise_caller_id(i.caller_id, "IT"))


def rule(decision, name: str):
    return next(r for r in decision.rules if r.rule == name)


def test_the_default_policy_allows_a_lawful_call_and_lists_every_rule() -> None:
    d = run()
    assert d.allow and d.reasons == ()
    assert [r.rule for r in d.rules] == list(RULES)
    assert all(r.outcome == "pass" for r in d.rules), d.rules


# --- caller ID -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller_id", "reasons"),
    [
        ("+39 02 1234 0000", ()),  # declared, national format
        ("0212340000", ()),
        ("+390844123456", ()),  # AGCOM 0844: unknown to libphonenumber, accepted
        (None, (Reason.CALLER_ID_MISSING,)),
        ("", (Reason.CALLER_ID_MISSING,)),
        ("anonymous", (Reason.CALLER_ID_MISSING,)),
        (" Private ", (Reason.CALLER_ID_MISSING,)),
        ("12", (Reason.CALLER_ID_MISSING,)),  # not a callable number
        ("+39 02 1234 0001", (Reason.CALLER_ID_NOT_DECLARED,)),  # valid, not declared
        ("+39 347 000 0000", (Reason.CALLER_ID_NOT_DECLARED,)),
    ],
)
def test_caller_id(caller_id, reasons) -> None:
    d = run(intent(caller_id))
    assert d.reasons == reasons and d.allow == (not reasons)
    assert rule(d, "caller_id").outcome == ("deny" if reasons else "pass")


@pytest.mark.parametrize(
    ("purpose", "caller_id", "allowed"),
    [
        (Purpose.MARKETING, "+390844123456", True),  # the telemarketing prefix
        (Purpose.MARKETING, "+390212340000", True),  # geographic: the accepted alternative
        (Purpose.MARKETING, "+39800123456", False),  # toll-free: neither
        (Purpose.MARKETING, "+390843123456", False),  # the statistical prefix is not the commercial one
        # L. 5/2018 art. 2 c. 1: market research shares 0844 with advertising and sales
        (Purpose.SURVEY, "+390844123456", True),
        (Purpose.SURVEY, "+390843123456", False),
        (Purpose.SURVEY, "+390212340000", True),
        # statistical surveys: 0843
        (Purpose.STATISTICAL, "+390843123456", True),
        (Purpose.STATISTICAL, "+390844123456", False),
        (Purpose.STATISTICAL, "+390212340000", True),
        (Purpose.STATISTICAL, "+39800123456", False),
    ],
)
def test_caller_id_prefix_switch(purpose, caller_id, allowed) -> None:
    strict = replace(POLICY, caller_id_require_prefix=True)
    d = run(intent(caller_id, purpose), policy=strict)
    assert d.allow == allowed
    assert d.reasons == (() if allowed else (Reason.CALLER_ID_WRONG_PREFIX,))
    assert run(intent(caller_id, purpose)).allow  # off by default: every declared number passes


def test_service_calls_need_a_callable_caller_id_too() -> None:
    # L. 5/2018 art. 2 c. 1: every call-centre call presents its caller ID
    d = run(intent(None, Purpose.SERVICE))
    assert d.reasons == (Reason.CALLER_ID_MISSING,)
    assert rule(run(intent("anonymous", Purpose.SERVICE)), "caller_id").reasons == (Reason.CALLER_ID_MISSING,)
    assert run(intent("+39 02 1234 0000", Purpose.SERVICE)).allow
    assert run(intent("+39 02 1234 0099", Purpose.SERVICE)).reasons == (Reason.CALLER_ID_NOT_DECLARED,)


def test_caller_id_rule_skips_unknown_operators() -> None:
    d = decide(intent("+390212340000"), MOBILE, replace(facts(), operator=None), FRIDAY_NOON, POLICY, "+390212340000")
    assert d.reasons == (Reason.OPERATOR_UNKNOWN,)  # the operator rule denies; no second reason
    assert rule(d, "caller_id").outcome == "skipped"


# --- calling hours ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "allowed"),
    [
        (rome(2026, 11, 27, 19, 59, 59), True),  # Friday, last second
        (rome(2026, 11, 27, 20, 0, 0), False),  # Friday 20:00:00: too late
        (rome(2026, 11, 27, 8, 59, 59), False),
        (rome(2026, 11, 27, 9, 0, 0), True),
        (rome(2026, 11, 28, 9, 59, 59), False),  # Saturday opens at 10
        (rome(2026, 11, 28, 18, 59, 59), True),
        (rome(2026, 11, 28, 19, 0, 0), False),
        (rome(2026, 11, 29, 12, 0), False),  # Sunday
        (rome(2027, 1, 1, 12, 0), False),  # 1 January
        (rome(2026, 12, 31, 19, 30), False),  # New Year's Eve: a pre-holiday weekday, 10-19
        (rome(2026, 12, 31, 18, 59), True),
        (rome(2026, 4, 4, 12, 0), True),  # the Saturday before Easter Monday
        (rome(2026, 4, 4, 19, 0), False),
        (rome(2026, 4, 6, 12, 0), False),  # Easter Monday
        (rome(2026, 3, 29, 12, 0), False),  # Sunday of the spring DST change
        (rome(2026, 3, 30, 8, 59, 59), False),  # Monday after: 06:59:59 UTC
        (rome(2026, 3, 30, 9, 0), True),  # 07:00 UTC, local time not UTC
        (rome(2026, 10, 26, 9, 0), True),  # Monday after the autumn change: 08:00 UTC
        (rome(2026, 10, 26, 8, 59, 59), False),
    ],
)
def test_calling_hours(moment, allowed) -> None:
    d = run(now=moment)
    assert d.allow == allowed
    assert d.reasons == (() if allowed else (Reason.OUTSIDE_CALLING_HOURS,))


def test_outside_hours_says_when_the_next_window_opens() -> None:
    d = run(now=rome(2026, 11, 28, 19, 30))  # Saturday evening: Sunday is closed
    detail = rule(d, "calling_hours").detail
    assert detail["window"] == "10:00-19:00" and detail["zone"] == "Europe/Rome"
    assert detail["next_window"] == "2026-11-30T08:00:00.000Z"  # Monday 09:00 Rome
    assert detail["local_time"] == "2026-11-28T19:30:00+01:00"


def test_a_deny_that_time_lifts_says_when_to_ask_again() -> None:
    saturday_evening = rome(2026, 11, 28, 19, 30)
    d = run(now=saturday_evening, f=facts(saturday_evening, calls=calls(1, 2, 50, now=saturday_evening)))
    assert d.to_message()["not_before"] == "2026-11-30T08:00:00.000Z"  # Monday 09:00 Rome
    capped = run(f=facts(calls=calls(1, 2, 5)))
    assert capped.to_message()["not_before"] == "2026-11-28T06:00:00.000Z"
    both = run(now=rome(2026, 11, 27, 20, 30), f=facts(calls=calls(1, 2, 5, now=rome(2026, 11, 27, 20, 30))))
    # the later of the two: the window opens Saturday 09:00Z, the cap frees at 14:30Z
    assert both.to_message()["not_before"] == "2026-11-28T14:30:00.000Z"
    # a reason that time does not lift: no hint
    assert "not_before" not in run(intent(None), now=saturday_evening).to_message()
    assert "not_before" not in run().to_message()


def test_the_decision_time_decides_not_the_time_the_dialer_claims() -> None:
    claimed = replace(intent(), requested_at=rome(2026, 11, 27, 12, 0))
    assert not run(claimed, now=rome(2026, 11, 27, 21, 0)).allow


def test_local_patron_saint_days_apply_to_geographic_numbers_only() -> None:
    policy = replace(
        POLICY, calling_hours=replace(POLICY.calling_hours, local_holidays=(LocalHoliday("+3902", 12, 7, "Ambrogio"),))
    )
    monday = rome(2026, 12, 7, 12, 0)  # also the eve of 8 December: 10-19 for everyone else
    assert run(now=monday, callee=MILAN, policy=policy).reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert run(now=monday, callee=MOBILE, policy=policy).allow
    assert run(now=monday, callee=MILAN).allow  # without the local day


def test_the_shipped_policy_knows_the_big_cities_patron_saints() -> None:
    from callguard.core.policyfile import shipped_policy

    shipped = shipped_policy("it")
    assert run(now=rome(2026, 6, 29, 12, 0), callee="+390612345678", policy=shipped).reasons == (
        Reason.OUTSIDE_CALLING_HOURS,
    )
    assert run(now=rome(2026, 6, 29, 12, 0), callee=MOBILE, policy=shipped).allow


@pytest.mark.parametrize(
    ("callee", "reasons"),
    [
        ("+79161234567", (Reason.TIMEZONE_UNKNOWN,)),  # Russian mobile: eleven offsets, never guessed
        ("+33612345678", ()),  # France has one zone: 12:00 in Paris is inside the window
    ],
)
def test_a_zone_is_used_only_when_the_numbering_plan_gives_one(callee, reasons) -> None:
    assert run(callee=callee).reasons == reasons


def test_one_instant_gets_each_zones_own_verdict() -> None:
    """Verdicts are worked out once per instant, zone and local days (a
    batch shares its decision time): numbers in other zones at the same
    instant must still be judged by their own clock."""
    policy = PolicySettings()
    morning = rome(2026, 11, 27, 10, 0)  # 04:00 in Washington, 09:00 in London (its window opens at 09:00)
    assert run(now=morning, callee=MOBILE, policy=policy).allow
    assert run(now=morning, callee="+12025550143", policy=policy).reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert run(now=morning, callee="+447400123456", policy=policy).allow
    assert run(now=morning, callee=MOBILE, policy=policy).allow


# --- frequency caps -----------------------------------------------------------------------


def calls(*hours_ago: float, now: datetime = FRIDAY_NOON) -> tuple[PastCall, ...]:
    return tuple(PastCall(now - timedelta(hours=h), f"r{index}") for index, h in enumerate(hours_ago))


@pytest.mark.parametrize(
    ("past", "allowed"),
    [
        (calls(), True),
        (calls(1, 2), True),
        (calls(1, 2, 3), False),  # 3 in 24 h: full
        (calls(1, 2, 24), True),  # exactly 24 h ago is out of the rolling window
        (calls(1, 2, 23.99), False),
        (calls(1, 2, -0.001), False),  # stamped by a worker whose clock runs ahead: it still counts
        (calls(*(30 * 24 - 1 - 30 * i for i in range(10))), False),  # 10 in 30 days
        (calls(*(30 * 24 - 30 * i for i in range(10))), True),  # the oldest is exactly 30 days old
    ],
)
def test_frequency_caps(past, allowed) -> None:
    d = run(f=facts(calls=past))
    assert d.allow == allowed
    assert d.reasons == (() if allowed else (Reason.FREQUENCY_CAP,))


def test_a_full_cap_says_when_the_next_call_is_allowed() -> None:
    detail = rule(run(f=facts(calls=calls(1, 2, 5))), "frequency_cap").detail
    assert detail["next_allowed"] == "2026-11-28T06:00:00.000Z"  # the oldest of the three + 24 h
    assert detail["limits"][0] == {"window_hours": 24.0, "max": 3, "calls": 3}


def test_a_redelivered_intent_keeps_its_allow_when_the_cap_is_full() -> None:
    mine = PastCall(FRIDAY_NOON - timedelta(minutes=1), intent_ref("i-1"))
    past = (*calls(1, 2), mine)
    assert run(f=facts(calls=past)).allow
    assert not run(intent(intent_id="i-2"), f=facts(calls=past)).allow


def test_caps_are_policy_data() -> None:
    one_per_hour = replace(POLICY, frequency_limits=(CapLimit(timedelta(hours=1), 1),))
    assert not run(f=facts(calls=calls(0.5)), policy=one_per_hour).allow
    assert run(f=facts(calls=calls(1.5)), policy=one_per_hour).allow


# --- silent calls --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ago", "allowed"),
    [(timedelta(days=7) - timedelta(milliseconds=1), False), (timedelta(days=7), True), (timedelta(hours=1), False)],
)
def test_silent_call_blocks_for_seven_days(ago, allowed) -> None:
    d = run(f=facts(silent_at=FRIDAY_NOON - ago))
    assert d.allow == allowed
    assert d.reasons == (() if allowed else (Reason.RECENT_SILENT_CALL,))


# --- policy switches ---------------------------------------------------------------------


def test_every_calling_rule_can_be_switched_off() -> None:
    late = rome(2026, 11, 29, 12, 0)  # Sunday
    everything_wrong = facts(calls=calls(1, 2, 3, now=late), silent_at=late - timedelta(hours=1))
    d = run(intent(None), now=late, f=replace(everything_wrong, register=facts(late).register))
    assert set(d.reasons) == {
        Reason.CALLER_ID_MISSING,
        Reason.OUTSIDE_CALLING_HOURS,
        Reason.FREQUENCY_CAP,
        Reason.RECENT_SILENT_CALL,
    }
    off = dict(POLICY.scopes)
    for name in ("caller_id", "calling_hours", "frequency_cap", "silent_calls"):
        off[name] = RuleScope(enabled=False)
    relaxed = replace(POLICY, scopes=off)
    d = run(intent(None), now=late, f=replace(everything_wrong, register=facts(late).register), policy=relaxed)
    assert d.allow
    assert {r.rule: r.detail for r in d.rules if r.outcome == "skipped"} == {
        "caller_id": {"disabled": True},
        "calling_hours": {"disabled": True},
        "frequency_cap": {"disabled": True},
        "silent_calls": {"disabled": True},
    }


def test_rules_apply_to_the_purposes_the_policy_names() -> None:
    sunday = rome(2026, 11, 29, 12, 0)
    assert run(intent(purpose=Purpose.SERVICE), now=sunday).allow  # service calls are not telemarketing
    scopes = {**POLICY.scopes, "calling_hours": RuleScope(purposes=frozenset(Purpose))}
    d = run(intent(purpose=Purpose.SERVICE), now=sunday, policy=replace(POLICY, scopes=scopes))
    assert d.reasons == (Reason.OUTSIDE_CALLING_HOURS,)


def test_a_deny_lists_the_calling_rules_with_the_register_ones() -> None:
    opposed = replace(facts(), register=(RegisterResult(True, date(2026, 11, 27), date(2024, 1, 1), "*"),))
    d = run(intent(None), now=rome(2026, 11, 27, 21, 0), f=opposed)
    assert d.reasons == (Reason.OPPOSITION_REGISTER, Reason.CALLER_ID_MISSING, Reason.OUTSIDE_CALLING_HOURS)
    assert not d.retryable
