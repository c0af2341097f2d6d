"""Table tests of the United States pack and of policy sets (the pure core):
every boundary pinned on both sides, in days and in instants.

The pack decides by ``policies/us.toml`` as shipped; a policy set
(``policies/default.toml``) chooses it for the callees of the 50 states.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers import timezone as number_timezones
from phonenumbers.geodata import GEOCODE_DATA

from callguard.core.facts import Consent, Facts, NamedResult, Operator, OptOut, PastCall, intent_ref
from callguard.core.policy import Decision, PolicySettings, RuleResult, decide
from callguard.core.policyfile import PolicyError, describe, load_policy, parse_policy, shipped_policy
from callguard.core.schema import Intent, Purpose, Reason
from callguard.core.sources import SOURCES
from callguard.core.uspolicy import add_months, callee_zones

NY = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")
US = shipped_policy("us")
SET = shipped_policy("default")
IT = shipped_policy("it")
CLIENT = "acme"
CALLER = "+12125550100"
OPERATOR = Operator("op-us", "active", date(2026, 1, 1), date(2027, 12, 31), (CALLER,), "US")
NYC = "+12125551234"
MIAMI = "+13055551234"  # Florida: 08:00-20:00, 3 calls a day, the state's own list
PANHANDLE = "+18505551234"  # Florida, Central and Eastern time
#: a Wednesday, noon in New York
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=NY).astimezone(UTC)
TODAY = date(2026, 12, 2)


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY).astimezone(UTC)  # type: ignore[misc]


def listing(*names: str, listed: bool = False, as_of: date = TODAY - timedelta(days=1)) -> dict[str, NamedResult]:
    return {name: NamedResult(name, listed, as_of) for name in names}


def facts(callee: str = NYC, **changes: object) -> Facts:
    """Facts that pass every rule: the lists that apply loaded yesterday, the number on none."""
    names = ("us-dnc", "us-fl-dnc") if callee[2:5] in US.us.registers[1].area_codes else ("us-dnc",)
    base = Facts(OPERATOR, registers=listing(*names))
    return replace(base, **changes)  # type: ignore[arg-type]


def intent(callee: str = NYC, purpose: Purpose = Purpose.MARKETING, automated: bool = False, **more: object) -> Intent:
    return Intent(more.pop("intent_id", "u-1"), callee, "op-us", CLIENT, purpose, CALLER, "camp", automated=automated)  # type: ignore[arg-type]


def run(
    f: Facts | None = None,
    callee: str = NYC,
    now: datetime = NOW,
    policy: PolicySettings = US,
    purpose: Purpose = Purpose.MARKETING,
    automated: bool = False,
    caller: str | None = CALLER,
) -> Decision:
    return decide(intent(callee, purpose, automated), callee, f or facts(callee), now, policy, caller)


def rule(decision: Decision, name: str) -> RuleResult:
    return next(r for r in decision.rules if r.rule == name)


def test_a_clear_number_at_noon_is_callable():
    d = run()
    assert d.allow and d.reasons == ()
    assert d.versions["policy"] == US.version and d.versions["register:us-dnc"] == "2026-12-01"


# --- jurisdiction by callee ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("callee", "pack"),
    [
        ("+393471234567", "it"),  # Italy
        ("+390669812345", "it"),  # Vatican City: +39 too
        (NYC, "us"),
        ("+19075551234", "us"),  # Alaska
        ("+18085551234", "us"),  # Hawaii
        ("+14165551234", None),  # Toronto: +1, not the 50 states
        ("+17875551234", None),  # Puerto Rico
        ("+442071234567", None),  # the United Kingdom
        ("+4930123456", None),
    ],
)
def test_the_callee_country_chooses_the_pack(callee: str, pack: str | None):
    decided = run(Facts(OPERATOR), callee=callee, policy=SET)
    chosen = rule(decided, "jurisdiction")
    assert decided.versions["policy_set"] == SET.jurisdictions.version  # type: ignore[union-attr]
    if pack is None:
        assert decided.reasons == (Reason.NO_POLICY_FOR_COUNTRY,) and chosen.outcome == "deny"
        assert decided.versions["policy"] == SET.jurisdictions.version  # type: ignore[union-attr]
        assert decided.retryable is False and decided.facts == {}
    else:
        assert chosen.outcome == "pass" and chosen.detail["pack"] == decided.versions["policy"]
        assert decided.versions["policy"] == shipped_policy(pack).version
        assert Reason.NO_POLICY_FOR_COUNTRY not in decided.reasons


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_country_without_a_pack_is_denied_for_the_sets_purposes_only(purpose: Purpose):
    decided = run(Facts(OPERATOR), callee="+4930123456", policy=SET, purpose=purpose)
    if purpose == Purpose.SERVICE:  # decided by the fallback pack, as every callee was before sets
        assert decided.versions["policy"] == IT.version
        assert Reason.NO_POLICY_FOR_COUNTRY not in decided.reasons
    else:
        assert decided.reasons == (Reason.NO_POLICY_FOR_COUNTRY,)


def test_an_invalid_callee_is_invalid_whatever_the_set():
    decided = decide(intent("not a number"), None, Facts(OPERATOR), NOW, SET, CALLER)
    assert Reason.INVALID_NUMBER in decided.reasons and decided.versions["policy"] == IT.version


def test_a_pack_alone_decides_every_callee_as_before():
    decided = run(Facts(OPERATOR), callee="+4930123456", policy=IT)
    assert Reason.NO_POLICY_FOR_COUNTRY not in decided.reasons
    assert "policy_set" not in decided.versions and all(r.rule != "jurisdiction" for r in decided.rules)


def test_italian_callees_are_decided_under_the_set_as_by_the_italian_pack_alone():
    """Adding the US pack changed no Italian decision: under the shipped set,
    every Italian case decides as the Italian pack alone does (the same
    rules, details and facts), plus the set's version and which pack decided."""
    from tests.core.test_replay import _case

    rng = random.Random(23)
    seen = 0
    for n in range(1500):
        case_intent, callee, case_facts, now, caller = _case(rng, n)
        if callee is None or not callee.startswith("+39"):
            continue
        alone = decide(case_intent, callee, case_facts, now, IT, caller)
        under = decide(case_intent, callee, case_facts, now, SET, caller)
        assert (under.allow, under.reasons, under.not_before, under.requires_operator) == (
            alone.allow,
            alone.reasons,
            alone.not_before,
            alone.requires_operator,
        )
        assert [r for r in under.rules if r.rule != "jurisdiction"] == list(alone.rules)
        assert under.facts == alone.facts
        assert under.versions == {**alone.versions, "policy_set": SET.jurisdictions.version}  # type: ignore[union-attr]
        seen += 1
    assert seen > 1000


# --- the shipped files and their sources ---------------------------------------------------


US_KEY = re.compile(r"\b(?:TSR_[A-Z0-9_]+|TCPA_[A-Z0-9_]+|US_TIME_ZONES|FL_[A-Z]+|OK_TSA|MD_SSCA)\b")


def test_every_us_rule_cites_a_source_that_is_written_down():
    from callguard.core import uspolicy

    checks = [
        getattr(uspolicy, name)
        for name in dir(uspolicy)
        if name.startswith("check_") and getattr(uspolicy, name).__module__ == uspolicy.__name__
    ]
    assert len(checks) >= 5
    for check in [*checks, uspolicy.ebr_in_force, uspolicy._optout]:
        cited = US_KEY.findall(check.__doc__ or "")
        assert cited, f"{check.__name__} cites no source"
        assert set(cited) <= SOURCES.keys(), f"{check.__name__} cites {set(cited) - SOURCES.keys()}"
    for name, scope in US.scopes.items():
        if scope.enabled and name not in ("callee_number", "operator_certified"):
            assert US.rule_sources.get(name), f"us.toml: rules.{name} cites no source"
    for register in US.us.registers:
        assert register.sources and set(register.sources) <= SOURCES.keys()
    for state in (*US.us.state_windows, *US.us.state_limits):
        assert state.sources and set(state.sources) <= SOURCES.keys()
    text = (Path(uspolicy.__file__).parents[1] / "policies" / "us.toml").read_text()
    assert set(US_KEY.findall(text)) <= SOURCES.keys()


@pytest.mark.parametrize("state", ["FL", "OK", "MD"])
def test_the_state_area_codes_are_libphonenumbers(state: str):
    """The pack keys state rules by area code: its lists are every area code
    libphonenumber's geocoder places in the state, no more, no fewer."""
    names = {"FL": "Florida", "OK": "Oklahoma", "MD": "Maryland"}
    known = {
        key[1:]
        for key, names_by_language in GEOCODE_DATA.items()
        if key.startswith("1")
        and len(key) == 4
        and (names_by_language.get("en") == names[state] or names_by_language.get("en", "").endswith(f", {state}"))
    }
    windows = {w.state: w.area_codes for w in US.us.state_windows}
    caps = {c.state: c.area_codes for c in US.us.state_limits}
    assert windows[state] == known == caps[state]
    if state == "FL":
        assert next(r for r in US.us.registers if r.state == "FL").area_codes == known


def test_the_default_set_is_documented_and_shows_its_packs():
    shown = describe(SET)
    assert shown["countries"] == {"IT": "it", "US": "us", "VA": "it"}
    assert shown["other_countries"] == {"deny": ["marketing", "statistical", "survey"], "pack": "it"}
    assert shown["packs"]["us"]["jurisdiction"] == "us"
    assert list(shown["packs"]["us"]["rules"]) == list(US.rules)
    assert load_policy() == SET  # the worker's default


# --- the do-not-call registers -------------------------------------------------------------


@pytest.mark.parametrize(("age", "stale"), [(0, False), (31, False), (32, True)])
def test_a_registry_download_is_used_for_31_days(age: int, stale: bool):
    """TSR safe harbor: a version obtained no more than 31 days before the call (day D through D+31)."""
    for listed in (False, True):
        d = run(facts(registers=listing("us-dnc", listed=listed, as_of=TODAY - timedelta(days=age))))
        expected = (Reason.REGISTER_STALE,) if stale else ()
        expected += (Reason.NATIONAL_DNC,) if listed else ()
        assert d.reasons == expected
        assert rule(d, "do_not_call_registers").detail["registers"][0]["age_days"] == age


def test_the_age_is_counted_in_new_york_days():
    as_of = date(2026, 11, 1)  # 31 days before 2 December
    late = run(facts(registers=listing("us-dnc", as_of=as_of)), now=ny(2026, 12, 2, 23, 59, 59))
    assert late.allow or Reason.REGISTER_STALE not in late.reasons
    next_day = run(facts(registers=listing("us-dnc", as_of=as_of)), now=ny(2026, 12, 3, 0, 0, 0))
    assert Reason.REGISTER_STALE in next_day.reasons


def test_a_number_no_list_covers_is_not_checked():
    d = run(facts(registers={"us-dnc": NamedResult("us-dnc", False, None)}))
    assert d.reasons == (Reason.NOT_CHECKED,)
    assert run(facts(registers={})).reasons == (Reason.NOT_CHECKED,)
    assert d.versions["register:us-dnc"] is None


def test_a_florida_callee_is_checked_against_the_florida_list_too():
    assert run(callee=MIAMI).allow
    florida_missing = facts(MIAMI, registers=listing("us-dnc"))
    d = run(florida_missing, callee=MIAMI)
    assert d.reasons == (Reason.NOT_CHECKED,)
    assert [r["register"] for r in rule(d, "do_not_call_registers").detail["registers"]] == ["us-dnc", "us-fl-dnc"]
    on_florida_list = facts(MIAMI, registers={**listing("us-dnc"), **listing("us-fl-dnc", listed=True)})
    assert run(on_florida_list, callee=MIAMI).reasons == (Reason.STATE_DNC,)
    # a New York callee is not held to Florida's list
    assert run(facts(NYC, registers=listing("us-dnc"))).allow


@pytest.mark.parametrize(
    ("consent", "allowed"),
    [
        (Consent(CLIENT, "consent", date(2025, 5, 1)), True),
        (Consent(CLIENT, "consent", date(2025, 5, 1), date(2026, 12, 2)), True),  # ends today: today included
        (Consent(CLIENT, "consent", date(2025, 5, 1), date(2026, 12, 1)), False),  # ended yesterday
        (Consent("beta", "consent", date(2025, 5, 1)), False),  # another client's
        (Consent(CLIENT, "contract", date(2025, 5, 1)), False),  # a contract is no US exception
        (Consent(CLIENT, "request", date(2026, 12, 1)), False),  # record an inquiry as ebr_inquiry
        (Consent(CLIENT, "consent", date(2026, 12, 3)), False),  # not given yet
    ],
)
def test_a_written_agreement_lifts_the_registry(consent: Consent, allowed: bool):
    d = run(facts(registers=listing("us-dnc", listed=True), consents=(consent,)))
    assert d.allow is allowed
    assert d.reasons == ((Reason.CONSENT,) if allowed else (Reason.NATIONAL_DNC,))


@pytest.mark.parametrize(
    ("basis", "granted", "last_day"),
    [
        ("ebr_transaction", date(2025, 1, 15), date(2026, 7, 14)),  # 18 months: through the day before T + 18 months
        ("ebr_inquiry", date(2026, 9, 2), date(2026, 12, 1)),  # 3 months
        ("ebr_transaction", date(2024, 8, 31), date(2026, 2, 27)),  # 31 August + 18 months = 28 February
        ("ebr_inquiry", date(2026, 11, 30), date(2027, 2, 27)),  # 30 November + 3 months = 28 February
    ],
)
def test_an_established_business_relationship_lasts_its_months_in_days(basis: str, granted: date, last_day: date):
    """16 CFR 310.2(q): 18 months after the last transaction, 3 after an inquiry (New York days)."""
    ebr = Consent(CLIENT, basis, granted)  # type: ignore[arg-type]
    listed = facts(registers=listing("us-dnc", listed=True, as_of=last_day), consents=(ebr,))
    before_midnight = datetime.combine(last_day, datetime.max.time(), tzinfo=NY).astimezone(UTC)
    at_midnight = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), tzinfo=NY).astimezone(UTC)
    assert rule(run(listed, now=before_midnight), "do_not_call_registers").reasons == (Reason(basis),)
    assert rule(run(listed, now=at_midnight), "do_not_call_registers").reasons == (Reason.NATIONAL_DNC,)
    assert add_months(granted, 18 if basis == "ebr_transaction" else 3) == last_day + timedelta(days=1)


@pytest.mark.parametrize(("basis", "months"), [("ebr_transaction", 18), ("ebr_inquiry", 3)])
def test_an_established_business_relationship_lasts_its_months_in_instants(basis: str, months: int):
    granted = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    end = (
        datetime(2026, 3 + months, 10, 15, 30, tzinfo=UTC) if months < 10 else datetime(2027, 9, 10, 15, 30, tzinfo=UTC)
    )
    ebr = Consent(CLIENT, basis, granted)  # type: ignore[arg-type]
    listed = facts(registers=listing("us-dnc", listed=True, as_of=end.astimezone(NY).date()), consents=(ebr,))
    assert rule(run(listed, now=end - timedelta(milliseconds=1)), "do_not_call_registers").outcome == "allow_exception"
    assert rule(run(listed, now=end), "do_not_call_registers").reasons == (Reason.NATIONAL_DNC,)
    assert rule(run(listed, now=granted - timedelta(milliseconds=1)), "do_not_call_registers").outcome == "deny"
    assert rule(run(listed, now=granted), "do_not_call_registers").outcome == "allow_exception"


def test_a_relationship_ended_by_either_party_no_longer_counts():
    ended = Consent(CLIENT, "ebr_transaction", date(2026, 6, 1), date(2026, 11, 30))
    assert run(facts(registers=listing("us-dnc", listed=True), consents=(ended,))).reasons == (Reason.NATIONAL_DNC,)


def test_a_stale_list_denies_whatever_the_exceptions():
    ebr = Consent(CLIENT, "ebr_transaction", date(2026, 6, 1))
    stale = listing("us-dnc", listed=True, as_of=TODAY - timedelta(days=32))
    assert run(facts(registers=stale, consents=(ebr,))).reasons == (Reason.REGISTER_STALE, Reason.NATIONAL_DNC)


# --- the internal do-not-call list -----------------------------------------------------------


def test_an_opt_out_is_honoured_at_once_and_a_relationship_never_lifts_it():
    optout = (OptOut(CLIENT, datetime(2026, 12, 2, 16, 59, 59, tzinfo=UTC)),)  # a second before the call
    ebr = Consent(CLIENT, "ebr_transaction", date(2026, 12, 2))
    assert run(facts(optouts=optout, consents=(ebr,))).reasons == (Reason.INTERNAL_DNC,)
    later = Consent(CLIENT, "consent", datetime(2026, 12, 2, 17, 0, tzinfo=UTC) - timedelta(milliseconds=500))
    assert run(facts(optouts=optout, consents=(later,))).reasons == (Reason.CONSENT,)
    assert run(facts(optouts=(OptOut("*", date(2026, 1, 1)),))).reasons == (Reason.INTERNAL_DNC,)


# --- reassigned numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "counts"),
    [
        (date(2026, 1, 9), False),
        (date(2026, 1, 10), False),  # the disconnection's own day: the database answers "reassigned"
        (date(2026, 1, 11), True),
        (datetime(2026, 1, 10, 23, 59, 59, tzinfo=NY), False),
        (datetime(2026, 1, 11, 0, 0, 0, tzinfo=NY), True),
    ],
)
def test_a_consent_older_than_the_disconnection_no_longer_counts(granted: date, counts: bool):
    consent = Consent(CLIENT, "consent", granted)
    listed = facts(registers=listing("us-dnc", listed=True), consents=(consent,), disconnected_at=date(2026, 1, 10))
    d = run(listed)
    assert d.reasons == ((Reason.CONSENT,) if counts else (Reason.NATIONAL_DNC, Reason.NUMBER_REASSIGNED))
    voided = rule(d, "reassigned_numbers").detail["voided"]
    assert voided == ([] if counts else [consent.to_json()])
    automated = run(replace(listed, registers=listing("us-dnc")), automated=True)
    assert automated.reasons == ((Reason.CONSENT,) if counts else (Reason.CONSENT_REQUIRED, Reason.NUMBER_REASSIGNED))


def test_a_reassignment_voids_relationships_and_consents_after_opt_outs_too():
    ebr = Consent(CLIENT, "ebr_inquiry", date(2026, 11, 1))
    cut = date(2026, 11, 20)
    assert run(facts(registers=listing("us-dnc", listed=True), consents=(ebr,), disconnected_at=cut)).reasons == (
        Reason.NATIONAL_DNC,
        Reason.NUMBER_REASSIGNED,
    )
    optout = (OptOut(CLIENT, date(2026, 10, 1)),)
    consent = Consent(CLIENT, "consent", date(2026, 10, 15))
    assert run(facts(optouts=optout, consents=(consent,), disconnected_at=cut)).reasons == (
        Reason.INTERNAL_DNC,
        Reason.NUMBER_REASSIGNED,
    )
    # without a consent that would have counted, no word of a reassignment
    assert run(facts(registers=listing("us-dnc", listed=True), disconnected_at=cut)).reasons == (Reason.NATIONAL_DNC,)


# --- automated calls to wireless numbers ---------------------------------------------------------


def test_libphonenumber_cannot_tell_a_us_mobile_from_a_landline():
    for number in (NYC, MIAMI, "+18085551234"):
        kind = phonenumbers.number_type(phonenumbers.parse(number))
        assert kind == phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE


@pytest.mark.parametrize("purpose", list(Purpose))
def test_an_automated_call_needs_a_written_consent(purpose: Purpose):
    assert run(purpose=purpose, automated=True).reasons == (Reason.CONSENT_REQUIRED,)
    ebr = Consent(CLIENT, "ebr_transaction", date(2026, 11, 1))
    assert run(facts(consents=(ebr,)), purpose=purpose, automated=True).reasons == (Reason.CONSENT_REQUIRED,)
    consent = Consent(CLIENT, "consent", date(2026, 11, 1))
    d = run(facts(consents=(consent,)), purpose=purpose, automated=True)
    assert d.allow and d.reasons == (Reason.CONSENT,)
    assert rule(d, "wireless_automated").detail["number_type"] == "fixed_line_or_mobile"
    assert run(purpose=purpose).allow


# --- calling hours ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("callee", "local", "opens", "closes"),
    [
        (NYC, NY, (8, 0), (21, 0)),
        (MIAMI, NY, (8, 0), (20, 0)),  # Florida: 08:00-20:00
        ("+14055551234", CHICAGO, (8, 0), (20, 0)),  # Oklahoma
        ("+14105551234", NY, (8, 0), (20, 0)),  # Maryland
        ("+13125551234", CHICAGO, (8, 0), (21, 0)),  # Chicago
        ("+18085551234", ZoneInfo("Pacific/Honolulu"), (8, 0), (21, 0)),
    ],
)
def test_calls_only_inside_the_window_at_the_callees_location(
    callee: str, local: ZoneInfo, opens: tuple[int, int], closes: tuple[int, int]
):
    def at(h: int, m: int, s: int = 0) -> datetime:
        return datetime(2026, 12, 2, h, m, s, tzinfo=local).astimezone(UTC)

    def hours(now: datetime) -> RuleResult:
        return rule(run(callee=callee, now=now), "calling_hours")

    assert hours(at(opens[0], opens[1]) - timedelta(seconds=1)).reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert hours(at(*opens)).outcome == "pass"
    assert hours(at(*closes) - timedelta(seconds=1)).outcome == "pass"
    closed = hours(at(*closes))
    assert closed.reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert closed.not_before == at(*opens) + timedelta(days=1)  # tomorrow's opening


def test_libphonenumber_names_one_zone_for_area_codes_that_span_two():
    """The finding behind the pack's zones table: libphonenumber gives the
    Florida panhandle (850) Eastern time only, Chattanooga's 423 Central only."""
    assert number_timezones.time_zones_for_number(phonenumbers.parse(PANHANDLE)) == ("America/New_York",)
    assert number_timezones.time_zones_for_number(phonenumbers.parse("+14235551234")) == ("America/Chicago",)
    assert callee_zones(PANHANDLE, US) == ("America/Chicago", "America/New_York")
    assert callee_zones("+14235551234", US) == ("America/Chicago", "America/New_York")
    assert callee_zones(NYC, US) == ("America/New_York",)


def test_an_area_code_spanning_two_zones_needs_the_window_in_both():
    """850: the window opens at 08:00 Central (09:00 Eastern) and closes at
    20:00 Eastern (19:00 Central), Florida's 20:00; it never guesses one zone."""

    def hours(now: datetime) -> RuleResult:
        return rule(run(callee=PANHANDLE, now=now), "calling_hours")

    central_eight = datetime(2026, 12, 2, 8, 0, tzinfo=CHICAGO).astimezone(UTC)
    early = hours(central_eight - timedelta(seconds=1))  # 07:59:59 Central, 08:59:59 Eastern
    assert early.reasons == (Reason.OUTSIDE_CALLING_HOURS,) and early.not_before == central_eight
    assert set(early.detail["zones"]) == {"America/Chicago", "America/New_York"}
    assert hours(central_eight).outcome == "pass"
    eastern_eight_pm = ny(2026, 12, 2, 20, 0)
    assert hours(eastern_eight_pm - timedelta(seconds=1)).outcome == "pass"
    late = hours(eastern_eight_pm)  # 19:00 in Pensacola, still too late in Tallahassee
    assert late.reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert late.not_before == central_eight + timedelta(days=1)


def test_arizona_with_and_without_daylight_time():
    """928 spans Arizona's time (no daylight saving) and the Navajo Nation's
    Mountain time: one hour apart in summer, together in winter."""
    phoenix, denver = ZoneInfo("America/Phoenix"), ZoneInfo("America/Denver")
    summer_open = datetime(2026, 7, 1, 8, 0, tzinfo=phoenix).astimezone(UTC)
    assert rule(run(callee="+19285551234", now=summer_open), "calling_hours").outcome == "pass"
    summer_close = datetime(2026, 7, 1, 21, 0, tzinfo=denver).astimezone(UTC)  # 20:00 in Phoenix
    assert rule(run(callee="+19285551234", now=summer_close), "calling_hours").reasons == (
        Reason.OUTSIDE_CALLING_HOURS,
    )
    assert rule(run(callee="+19285551234", now=summer_close - timedelta(seconds=1)), "calling_hours").outcome == "pass"


def test_a_toll_free_number_is_held_to_every_zone_of_the_plan():
    """libphonenumber places a toll-free number in every zone of the North
    American plan, Guam to American Samoa: the window must hold in all of them."""
    d = run(callee="+18005551234", now=ny(2026, 12, 2, 14, 0))  # 05:00 in Guam
    hours = rule(d, "calling_hours")
    assert hours.reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert {"Pacific/Guam", "Pacific/Pago_Pago", "America/St_Johns"} <= set(hours.detail["zones"])
    opens = hours.not_before
    assert opens is not None and rule(run(callee="+18005551234", now=opens), "calling_hours").outcome == "pass"
    before = run(callee="+18005551234", now=opens - timedelta(seconds=1))
    assert rule(before, "calling_hours").outcome == "deny"


def test_zones_that_never_share_the_window_give_timezone_unknown():
    narrow = parse_policy('base = "us"\nversion = "narrow"\n[rules.calling_hours]\nwindow = "08:00-09:00"\n')
    assert rule(run(callee=NYC, policy=narrow, now=ny(2026, 12, 2, 8, 30)), "calling_hours").outcome == "pass"
    d = run(callee=PANHANDLE, policy=narrow, now=ny(2026, 12, 2, 8, 30))  # one hour apart, a one-hour window
    assert d.reasons == (Reason.TIMEZONE_UNKNOWN,) and d.not_before is None


# --- frequency caps and the abandoned-call rate -----------------------------------------------------


def calls(*ages: timedelta) -> tuple[PastCall, ...]:
    return tuple(PastCall(NOW - age, intent_ref(f"past-{i}")) for i, age in enumerate(ages))


def test_florida_allows_three_calls_a_day_and_new_york_has_no_cap():
    hour = timedelta(hours=1)
    assert run(facts(MIAMI, calls=calls(hour, 2 * hour)), callee=MIAMI).allow
    third = run(facts(MIAMI, calls=calls(hour, 2 * hour, 3 * hour)), callee=MIAMI)  # the fourth call in 24 h
    assert third.reasons == (Reason.FREQUENCY_CAP,) and third.not_before == NOW - 3 * hour + timedelta(hours=24)
    day = timedelta(hours=24)
    assert run(facts(MIAMI, calls=calls(hour, 2 * hour, day)), callee=MIAMI).allow  # 24 h ago: out of the window
    assert not run(facts(MIAMI, calls=calls(hour, 2 * hour, day - timedelta(milliseconds=1))), callee=MIAMI).allow
    assert run(facts(NYC, calls=calls(*(k * hour for k in range(1, 11))))).allow


def test_the_us_pack_records_state_calls_for_its_longest_window():
    assert US.longest_cap_window == timedelta(hours=24)
    assert US.cap_limits(NYC) == () and [lim.max_calls for lim in US.cap_limits(MIAMI)] == [3]


@pytest.mark.parametrize(
    ("abandoned", "answered", "stopped"), [(3, 100, False), (4, 100, True), (3, 99, True), (0, 0, False)]
)
def test_a_campaign_over_three_abandoned_calls_per_hundred_answered_is_stopped(
    abandoned: int, answered: int, stopped: bool
):
    d = run(facts(campaign_outcomes={"answered": answered, "abandoned": abandoned}))
    assert d.reasons == ((Reason.CAMPAIGN_SILENT_RATE,) if stopped else ())
    assert rule(d, "campaign_silent_rate").detail["window_days"] == 30


# --- caller ID ----------------------------------------------------------------------------------------


def test_the_caller_id_is_transmitted_and_declared_and_italy_s_carrier_block_does_not_apply():
    assert run(caller=None).reasons == (Reason.CALLER_ID_MISSING,)
    assert run(caller="+12125550199").reasons == (Reason.CALLER_ID_NOT_DECLARED,)
    abroad = replace(OPERATOR, caller_ids=("+390212345678",), country="AL")
    d = run(facts(operator=abroad), caller="+390212345678")
    assert d.allow and rule(d, "caller_id").outcome == "pass"


# --- policy files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('jurisdiction = "fr"\nversion = "x"', "jurisdiction: 'fr' is not a rule catalogue"),
        ('base = "us"\nversion = "x"\n[area_codes]\nFL = ["05"]', "area_codes.FL: expected a list of three-digit"),
        (
            'base = "us"\nversion = "x"\n[rules.calling_hours]\nstate_windows = [{ state = "TX", window = "08:00-20:00" }]',
            "rules.calling_hours.state_windows[0].state: TX has no [area_codes] entry",
        ),
        (
            'base = "us"\nversion = "x"\n[rules.calling_hours]\nzones = [{ area_codes = ["850"], zones = ["Mars/Base"] }]',
            "'Mars/Base' is not an IANA time zone",
        ),
        (
            'base = "us"\nversion = "x"\n[rules.do_not_call_registers]\nregisters = [{ name = "us-dnc", reason = "opposed" }]',
            "registers[0].reason: expected national_dnc or state_dnc",
        ),
        (
            'base = "us"\nversion = "x"\n[rules.do_not_call_registers]\nregisters = [{ name = "US DNC", reason = "national_dnc" }]',
            "registers[0].name: expected a register name",
        ),
        ('base = "us"\nversion = "x"\n[rules.caller_id]\nsources = ["NOPE"]', "unknown source 'NOPE'"),
        (
            'base = "us"\nversion = "x"\n[rules.opposition_register]\nenabled = false',
            "rules.opposition_register: unknown rule",
        ),
        ('version = "x"\n[countries]\nXX = "it"\n[other_countries]\npack = "it"', "countries.XX: not a region"),
        ('version = "x"\n[countries]\nUS = "us"\n[other_countries]\ndeny = ["marketing"]', "other_countries.pack"),
        ('version = "x"\n[countries]\nUS = "nope.toml"\n[other_countries]\npack = "it"', "countries.US: nope.toml"),
    ],
)
def test_a_bad_policy_file_says_what_and_where(text: str, error: str):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert any(error in e for e in caught.value.errors), caught.value.errors


def test_a_set_whose_packs_count_outcomes_over_different_windows_is_refused(tmp_path: Path):
    (tmp_path / "us7.toml").write_text('base = "us"\nversion = "us7"\n[rules.campaign_silent_rate]\nwindow_days = 7\n')
    (tmp_path / "set.toml").write_text(
        'version = "s"\n[countries]\nUS = "us7.toml"\nIT = "it"\n[other_countries]\npack = "it"\n'
    )
    with pytest.raises(PolicyError, match="different windows"):
        load_policy(tmp_path / "set.toml")
    (tmp_path / "set2.toml").write_text('version = "s"\n[countries]\nUS = "set.toml"\n[other_countries]\npack = "it"\n')
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "set2.toml")


def test_a_set_of_ones_own_packs_decides_by_them(tmp_path: Path):
    (tmp_path / "acme-us.toml").write_text(
        'base = "us"\nversion = "acme-us/1"\n[rules.calling_hours]\nwindow = "09:00-18:00"\n'
    )
    (tmp_path / "set.toml").write_text(
        'version = "acme/1"\n[countries]\nUS = "acme-us.toml"\nIT = "it"\n[other_countries]\ndeny = ["marketing"]\npack = "it"\n'
    )
    policy = load_policy(tmp_path / "set.toml")
    d = run(policy=policy, now=ny(2026, 12, 2, 18, 0))
    assert d.versions["policy"] == "acme-us/1" and d.reasons == (Reason.OUTSIDE_CALLING_HOURS,)
    assert (
        run(Facts(OPERATOR), callee="+4930123456", policy=policy, purpose=Purpose.SURVEY).versions["policy"]
        == IT.version
    )


def test_the_region_is_libphonenumbers_without_a_parse():
    """``region_of`` (which chooses the pack) answers as libphonenumber's
    ``region_code_for_number`` for the example numbers of every region and
    every NANP area code libphonenumber's geocoder knows."""
    from callguard.core.numbers import region_of

    numbers = ["+393471234567", "+390669812345", "+390612345678"]
    numbers += [f"+{key}2345678" for key in GEOCODE_DATA if key.startswith("1") and len(key) == 4]
    for regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.values():
        for region in regions:
            for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
                example = phonenumbers.example_number_for_type(region, kind)
                if example is not None:
                    numbers.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    checked = 0
    for number in numbers:
        parsed = phonenumbers.parse(number)
        if phonenumbers.is_valid_number(parsed):
            assert region_of(number) == phonenumbers.region_code_for_number(parsed), number
            checked += 1
    assert checked > 900
