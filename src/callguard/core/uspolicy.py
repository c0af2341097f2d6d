"""The United States pack: its own rules, and the shared rules with US parameters.

A pure module like :mod:`callguard.core.policy` (no I/O, no clock reads). The pack
is policy data (``callguard/policies/us.toml``, ``jurisdiction = "us"``); a
policy set (``policies/default.toml``) gives it the callees of the 50 states
(region ``US``: NANP numbers whose area code libphonenumber places in the
United States; Puerto Rico, Canada and the Caribbean are other regions).

What it reuses from the Italian pack unchanged: the operator and mandate
rules, the internal do-not-call list (``check_optout``), the caller ID
(``check_caller_id``, without the Italian block on calls from abroad), the
frequency caps (``check_frequency``, with each state's caps added by area
code) and the campaign's abandoned-call rate (``check_campaign_silent_rate``).
Its own rules: named do-not-call registers with the established business
relationship, reassigned numbers, automated calls to wireless numbers, and
calling hours over a set of time zones.

Each rule cites its sources by key (:mod:`callguard.core.sources`).
"""

from __future__ import annotations

from calendar import monthrange
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_timezones

from callguard.core.facts import Consent, Facts, proven_after, when_to_json
from callguard.core.frozen import frozen
from callguard.core.policy import (
    Decision,
    PolicySettings,
    RegisterRule,
    RuleResult,
    area_code,
    check_caller_id,
    check_campaign_silent_rate,
    check_optout,
    consent_in_force,
    frequency_result,
    has_begun,
    lookback,
    pack_decision,
    pack_start,
)
from callguard.core.schema import Intent, Reason, rfc3339

#: The consent bases that are an established business relationship, and the reason an allow carries.
EBR_REASONS = {"ebr_transaction": Reason.EBR_TRANSACTION, "ebr_inquiry": Reason.EBR_INQUIRY}


# --- consents, relationships and reassigned numbers -------------------------------


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months; a day the month lacks is its last (31 Aug + 6 months = 28 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, monthrange(year, month)[1]))


def ebr_end(consent: Consent, settings: PolicySettings) -> date | datetime:
    """When an established business relationship stops counting: ``months``
    after the transaction or inquiry, the first day (or instant) it no longer does."""
    months = (
        settings.us.ebr_transaction_months if consent.basis == "ebr_transaction" else settings.us.ebr_inquiry_months
    )
    granted = consent.granted_at
    if isinstance(granted, datetime):
        moment = granted.astimezone(UTC)
        day = add_months(moment.date(), months)
        return datetime.combine(day, moment.timetz())
    return add_months(granted, months)


def ebr_in_force(consent: Consent, now: datetime, settings: PolicySettings) -> bool:
    """An established business relationship lifts the registers while it lasts.

    Source: TSR_EBR (16 CFR 310.2(q)): the person's purchase or transaction
    "within the eighteen (18) months immediately preceding the date of a
    telemarketing call", or inquiry or application "within the three (3)
    months immediately preceding" it. A relationship of day T counts on the
    days before T + 18 months (T + 3 months for an inquiry), in the pack's
    time zone, and not from that day: the 18 months preceding a call on that
    day may be read to start on T, and the safe side is to stop. Of an
    instant, until the same instant 18 (3) months later. An ``ends_at`` (the
    relationship ended, 47 CFR 64.1200(f)(5): "which relationship has not
    been previously terminated") ends it sooner.
    """
    tz = settings.timezone
    if not has_begun(consent.granted_at, now, tz):
        return False
    if consent.ends_at is not None and not consent_in_force(consent, now, tz):
        return False
    end = ebr_end(consent, settings)
    if isinstance(end, datetime):
        return now < end
    return now.astimezone(tz).date() < end


def exception_reason(
    consent: Consent, bases: tuple[str, ...], now: datetime, settings: PolicySettings
) -> Reason | None:
    """The allow reason a consent, contract or relationship of the intent's
    client gives against a register whose exceptions are ``bases``, if it is
    in force now; else None."""
    if consent.basis not in bases:
        return None
    if consent.basis == "consent":
        return Reason.CONSENT if consent_in_force(consent, now, settings.timezone) else None
    if consent.basis in EBR_REASONS:
        return EBR_REASONS[consent.basis] if ebr_in_force(consent, now, settings) else None
    return None


def reassigned_split(
    intent: Intent, facts: Facts, settings: PolicySettings
) -> tuple[tuple[Consent, ...], tuple[Consent, ...]]:
    """The client's consents and relationships that still count, and those the
    number's permanent disconnection voided (:func:`check_reassigned`)."""
    mine = tuple(c for c in facts.consents if c.client_id == intent.client_id)
    disconnected = facts.disconnected_at
    if disconnected is None:
        return mine, ()
    tz = settings.timezone
    voided = tuple(c for c in mine if not proven_after(c.granted_at, disconnected, tz))
    return tuple(c for c in mine if c not in voided), voided


def check_reassigned(intent: Intent, facts: Facts, settings: PolicySettings) -> RuleResult:
    """A consent given before the number was permanently disconnected no longer counts.

    Source: TCPA_REASSIGNED (47 CFR 64.1200(m)): a caller is safe only when
    the reassigned numbers database says the number "has not been
    permanently disconnected since the date prior express consent was
    obtained"; the database answers "yes" (reassigned) when the consent's day
    is the disconnection's day or before it. So a consent, relationship or
    request of this client dated on or before the day the number was last
    permanently disconnected (``callguard reassigned load``) was given by
    the number's previous subscriber: the rules that would need it
    (``do_not_call_registers``, ``wireless_automated``, ``internal_dnc``)
    do not see it, and deny with ``number_reassigned`` where it would have
    lifted them. This rule itself only records what was voided.
    """
    _, voided = reassigned_split(intent, facts, settings)
    disconnected = facts.disconnected_at
    detail = {
        "disconnected_at": None if disconnected is None else disconnected.isoformat(),
        "voided": [c.to_json() for c in voided],
    }
    return RuleResult("reassigned_numbers", "pass", detail=detail)


# --- the do-not-call registers -----------------------------------------------------


def check_registers(
    intent: Intent,
    callee: str,
    facts: Facts,
    now: datetime,
    settings: PolicySettings,
    usable: tuple[Consent, ...],
    voided: tuple[Consent, ...],
) -> RuleResult:
    """No telemarketing call to a number on a do-not-call register, unless an exception holds.

    Sources: TSR_DNC_REGISTRY (16 CFR 310.4(b)(1)(iii)(B)) and TCPA_DNC
    (47 CFR 64.1200(c)(2)) for the National Do Not Call Registry; the
    states' own lists (e.g. FL_DNC) are registers of their own, for the
    callees of their area codes. Per register the policy names:

    1. No list covers the callee (none loaded, or not the callee's area code):
       ``not_checked``. TSR_DNC_REGISTRY forbids calls to a registered number;
       a number never checked must not be called.
    2. The list is older than ``stale_after_days`` (31: TSR_SAFE_HARBOR, a
       version "obtained ... no more than thirty-one (31) days prior to the
       date any call is made"; a list of day D is used on days D to D+31, in
       the pack's time zone): ``register_stale``.
    3. The callee is on it: the register's reason (``national_dnc``,
       ``state_dnc``), unless the client holds one of the register's
       exceptions: a written agreement (``consent``: TSR_DNC_REGISTRY
       (B)(1), "the express agreement, in writing") or an established
       business relationship (TSR_EBR; :func:`ebr_in_force`): allow with
       ``consent``, ``ebr_transaction`` or ``ebr_inquiry``.

    As in the Italian register, a stale or missing list denies whatever the
    exceptions (the safe side), and a deny lists every reason. An exception
    voided by a reassignment (:func:`check_reassigned`) adds
    ``number_reassigned``. The person's own opt-out is the internal list's
    (``internal_dnc``): an EBR never lifts it.
    """
    area = area_code(callee)
    today = now.astimezone(settings.timezone).date()
    reasons: list[Reason] = []
    listed: list[RegisterRule] = []
    results: list[dict[str, Any]] = []
    for rule in settings.us.registers_for(area):
        result = facts.registers.get(rule.name)
        entry: dict[str, Any] = {"register": rule.name, "stale_after_days": rule.stale_after_days}
        if result is None or result.as_of is None:
            entry["result"] = None
            reasons.append(Reason.NOT_CHECKED)
            results.append(entry)
            continue
        age = (today - result.as_of).days
        entry.update(result.to_json(), age_days=age)
        if age > rule.stale_after_days:
            reasons.append(Reason.REGISTER_STALE)
        if result.listed:
            listed.append(rule)
        results.append(entry)
    detail: dict[str, Any] = {"registers": results}
    if not results:
        detail["why"] = "no register applies to this callee"
    lifted: list[Reason] = []
    used: list[Consent] = []
    for rule in listed:
        found = [(r, c) for c in usable if (r := exception_reason(c, rule.exceptions, now, settings)) is not None]
        if found and not reasons:
            lifted += [r for r, _ in found]
            used += [c for _, c in found]
            continue
        reasons.append(rule.reason)
        if any(exception_reason(c, rule.exceptions, now, settings) is not None for c in voided):
            reasons.append(Reason.NUMBER_REASSIGNED)
    if reasons:
        return RuleResult("do_not_call_registers", "deny", tuple(dict.fromkeys(reasons)), detail)
    if lifted:
        detail["exceptions"] = [c.to_json() for c in dict.fromkeys(used)]
        return RuleResult("do_not_call_registers", "allow_exception", tuple(dict.fromkeys(lifted)), detail)
    return RuleResult("do_not_call_registers", "pass", detail=detail)


# --- automated calls to wireless numbers ----------------------------------------


#: libphonenumber's types of a number that is, or may be, wireless.
WIRELESS_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.PAGER,
        phonenumbers.PhoneNumberType.UNKNOWN,
    }
)


@lru_cache(maxsize=16_384)
def number_type(e164: str) -> int:
    """libphonenumber's type of a number (:class:`phonenumbers.PhoneNumberType`)."""
    try:
        return int(phonenumbers.number_type(phonenumbers.parse(e164, None)))
    except phonenumbers.NumberParseException:
        return int(phonenumbers.PhoneNumberType.UNKNOWN)


_TYPE_NAMES = {int(v): k.lower() for k, v in vars(phonenumbers.PhoneNumberType).items() if k.isupper()}


def check_wireless_automated(
    intent: Intent,
    callee: str,
    now: datetime,
    settings: PolicySettings,
    usable: tuple[Consent, ...],
    voided: tuple[Consent, ...],
) -> RuleResult:
    """An automated call to a wireless number needs the callee's prior express written consent.

    Source: TCPA_WIRELESS_AUTODIALED (47 CFR 64.1200(a)(2)): no call that
    "includes or introduces an advertisement or constitutes telemarketing,
    using an automatic telephone dialing system or an artificial or
    prerecorded voice" to a wireless number "other than a call made with the
    prior express written consent of the called party"; (a)(1)(iii) asks a
    prior express consent for any other such call to a wireless number.
    An intent with ``"automated": true`` to a number libphonenumber knows as
    mobile, or cannot tell from a landline (every US number: the numbering
    plan does not separate them, libphonenumber says ``fixed_line_or_mobile``),
    needs a ``consent`` of this client in force (a written agreement; an EBR
    does not count since the FCC's 2012 order, and a call request is no
    consent to a machine) → else ``consent_required`` (and
    ``number_reassigned`` when the only consent predates a disconnection).
    """
    if not intent.automated:
        return RuleResult("wireless_automated", "pass", detail={"automated": False})
    kind = number_type(callee)
    detail: dict[str, Any] = {"automated": True, "number_type": _TYPE_NAMES.get(kind, str(kind))}
    if kind not in WIRELESS_TYPES:
        return RuleResult("wireless_automated", "pass", detail=detail)
    for consent in usable:
        if exception_reason(consent, ("consent",), now, settings) is not None:
            detail["exceptions"] = [consent.to_json()]
            return RuleResult("wireless_automated", "allow_exception", (Reason.CONSENT,), detail)
    reasons = [Reason.CONSENT_REQUIRED]
    if any(exception_reason(c, ("consent",), now, settings) is not None for c in voided):
        reasons.append(Reason.NUMBER_REASSIGNED)
    return RuleResult("wireless_automated", "deny", tuple(reasons), detail)


# --- calling hours over a set of time zones -----------------------------------------


@lru_cache(maxsize=4096)
def _number_zones(prefix: str, e164: str) -> tuple[str, ...]:
    # libphonenumber's zone data for +1 goes down to the exchange (+1 NPA NXX): cached per exchange
    try:
        zones = number_timezones.time_zones_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return ()
    return () if not zones or number_timezones.UNKNOWN_TIMEZONE in zones else tuple(zones)


def callee_zones(callee: str, settings: PolicySettings) -> tuple[str, ...]:
    """Every time zone the callee may be in: libphonenumber's zones for the
    number, and those the policy adds for its area code (``zones``: area
    codes that span time zones where libphonenumber names fewer). Empty when
    libphonenumber knows none."""
    zones = _number_zones(callee[:8], callee)
    if not zones:
        return ()
    extra = settings.us.zones.get(area_code(callee) or "", ())
    return tuple(sorted(set(zones) | set(extra))) if extra else zones


def callee_window(callee: str, settings: PolicySettings) -> tuple[tuple[time, time], tuple[str, ...]]:
    """The calling window of one callee (the federal one, narrowed by its
    state's, by area code) and the states whose windows narrowed it."""
    start, end = settings.us.window
    states: list[str] = []
    area = area_code(callee)
    for state in settings.us.state_windows:
        if area in state.area_codes:
            start, end = max(start, state.window[0]), min(end, state.window[1])
            states.append(state.state)
    return (start, end), tuple(states)


def _inside(moment: datetime, zones: tuple[str, ...], window: tuple[time, time]) -> bool:
    for zone in zones:
        local = moment.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None)
        if not window[0] <= local < window[1]:
            return False
    return True


def next_opening(now: datetime, zones: tuple[str, ...], window: tuple[time, time]) -> datetime | None:
    """The first instant after ``now`` when the window is open in every zone
    (it opens when the last of the zones reaches its start), looking three
    days ahead; None when the zones never share it (a window shorter than
    their difference)."""
    candidates: set[datetime] = set()
    for zone in zones:
        tz = ZoneInfo(zone)
        today = now.astimezone(tz).date()
        for days in range(4):
            start = datetime.combine(today + timedelta(days=days), window[0], tzinfo=tz)
            if start > now:
                candidates.add(start.astimezone(UTC))
    for moment in sorted(candidates):
        if _inside(moment, zones, window):
            return moment
    return None


def check_zone_hours(callee: str, now: datetime, settings: PolicySettings) -> RuleResult:
    """Calls only between 8:00 and 21:00 at the callee's location, in every time zone it may be in.

    Sources: TSR_CALLING_HOURS (16 CFR 310.4(c): "before 8:00 a.m. or after
    9:00 p.m. local time at the called person's location") and
    TCPA_CALLING_HOURS (47 CFR 64.1200(c)(1)); stricter state windows by
    area code (FL_TSA, OK_TSA, MD_SSCA: 8:00 to 20:00). The end is exclusive
    (21:00:00 is too late). The location is known only as far as the area
    code tells (US_TIME_ZONES): where an area code spans several zones the
    window must hold in each of them (their intersection), never in a zone
    guessed for the number; a number libphonenumber places in no zone, or in
    zones that never share the window (a toll-free number: every zone of the
    plan), gives ``timezone_unknown``. A deny carries ``next_window``.
    """
    zones = callee_zones(callee, settings)
    if not zones:
        return RuleResult("calling_hours", "deny", (Reason.TIMEZONE_UNKNOWN,), {"zones": []})
    window, states = callee_window(callee, settings)
    return _zone_verdict(zones, window, states, now)


@lru_cache(maxsize=4096)
def _zone_verdict(
    zones: tuple[str, ...], window: tuple[time, time], states: tuple[str, ...], now: datetime
) -> RuleResult:
    # cached, and shared by decisions (its detail read-only): a batch's intents share
    # one decision time and mostly a few zone sets
    local = {zone: now.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds") for zone in zones}
    end = "24:00" if window[1] == time.max else window[1].isoformat("minutes")
    detail: dict[str, Any] = {"zones": local, "window": f"{window[0].isoformat('minutes')}-{end}"}
    if states:
        detail["states"] = list(states)
    if window[0] < window[1] and _inside(now, zones, window):
        return RuleResult("calling_hours", "pass", detail=frozen(detail))
    opens = next_opening(now, zones, window) if window[0] < window[1] else None
    if opens is None:
        # the zones never share the window (a toll-free number lies in every zone of the plan):
        # where the callee is cannot be narrowed enough to call at all
        detail["next_window"] = None
        return RuleResult("calling_hours", "deny", (Reason.TIMEZONE_UNKNOWN,), frozen(detail))
    detail["next_window"] = rfc3339(opens)
    return RuleResult("calling_hours", "deny", (Reason.OUTSIDE_CALLING_HOURS,), frozen(detail), opens)


# --- frequency caps by state ---------------------------------------------------------


def check_state_frequency(
    intent: Intent, callee: str, facts: Facts, now: datetime, settings: PolicySettings
) -> RuleResult:
    """The shared frequency caps, with the callee's state's caps added.

    Source: FL_TSA (Fla. Stat. 501.616(6)(b): not "more than three commercial
    telephone solicitation phone calls from any number to a person over a
    24-hour period on the same subject matter or issue"), OK_TSA and
    MD_SSCA (the same cap), by the callee's area code; counted per callee
    and client (a client's calls count as one subject: the safe side) by
    :func:`callguard.core.policy.check_frequency`.
    """
    return frequency_result(intent, facts.calls, now, settings.cap_limits(callee))


# --- the decision ------------------------------------------------------------------------


def decide_us(
    intent: Intent,
    callee: str | None,
    facts: Facts | None,
    now: datetime,
    settings: PolicySettings,
    caller: str | None = None,
    chosen: RuleResult | None = None,
) -> Decision:
    """Decide one intent by the United States pack (see :func:`callguard.core.policy.decide`)."""
    rules, versions, facts_json = pack_start(intent, callee, facts, now, settings, caller, chosen)
    if facts is not None:
        purpose = intent.purpose
        on = settings.active_rules(purpose)

        def skip(rule: str) -> RuleResult:
            return settings.skipped(rule, purpose)

        if callee is not None:
            if "reassigned_numbers" in on:
                usable, voided = reassigned_split(intent, facts, settings)
                rules.append(check_reassigned(intent, facts, settings))
            else:
                usable, voided = tuple(c for c in facts.consents if c.client_id == intent.client_id), ()
                rules.append(skip("reassigned_numbers"))
            rules += (
                check_registers(intent, callee, facts, now, settings, usable, voided)
                if "do_not_call_registers" in on
                else skip("do_not_call_registers"),
                check_wireless_automated(intent, callee, now, settings, usable, voided)
                if "wireless_automated" in on
                else skip("wireless_automated"),
                _optout(intent, facts, now, settings, usable, voided) if "internal_dnc" in on else skip("internal_dnc"),
                check_caller_id(intent, caller, facts.operator, settings, now)
                if "caller_id" in on
                else skip("caller_id"),
                check_zone_hours(callee, now, settings) if "calling_hours" in on else skip("calling_hours"),
                check_state_frequency(intent, callee, facts, now, settings)
                if "frequency_cap" in on
                else skip("frequency_cap"),
                check_campaign_silent_rate(facts.campaign_outcomes, settings)
                if "campaign_silent_rate" in on
                else skip("campaign_silent_rate"),
            )
            for rule in settings.us.registers_for(area_code(callee)):
                result = facts.registers.get(rule.name)
                versions["register:" + rule.name] = (
                    None if result is None or result.as_of is None else result.as_of.isoformat()
                )
            facts_json["registers"] = [r.to_json() for r in facts.registers.values()]
            facts_json["consents"] = [c.to_json() for c in facts.consents]
            facts_json["optouts"] = [o.to_json() for o in facts.optouts]
            facts_json["disconnected_at"] = None if facts.disconnected_at is None else facts.disconnected_at.isoformat()
            facts_json["calls"] = [{"at": when_to_json(call.at), "ref": call.ref} for call in facts.calls]
            facts_json["campaign_outcomes"] = facts.campaign_outcomes
            facts_json["lookback"] = lookback(settings)
    return pack_decision(intent, callee, now, rules, versions, facts_json, chosen)


def _optout(
    intent: Intent,
    facts: Facts,
    now: datetime,
    settings: PolicySettings,
    usable: tuple[Consent, ...],
    voided: tuple[Consent, ...],
) -> RuleResult:
    """The internal do-not-call list, the shared rule (:func:`callguard.core.policy.check_optout`).

    Sources: TSR_ENTITY_DNC (16 CFR 310.4(b)(1)(iii)(A)) and TCPA_ENTITY_DNC
    (47 CFR 64.1200(d)(3)): a person who asked this seller not to be called is
    not called. The law allows up to ten business days to honour the request;
    callguard applies it to the next intent (about a second). Only a written
    consent given after every opt-out lifts it (an EBR never does); one
    voided by a reassignment adds ``number_reassigned``.
    """
    result = check_optout(intent.client_id, facts.optouts, usable, now, settings)
    if result.outcome == "deny" and voided:
        again = check_optout(intent.client_id, facts.optouts, voided, now, settings)
        if again.outcome == "allow_exception":
            return RuleResult(result.rule, "deny", (*result.reasons, Reason.NUMBER_REASSIGNED), result.detail)
    return result
