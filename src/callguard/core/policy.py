"""The decision policy: a pure function of (intent, facts, clock) to a decision.

No I/O happens here, so every rule can be tested exhaustively and a
compliance officer can read each rule next to the law it implements. Each
rule's docstring cites its sources by key (``L5_2018_ART1_C5``, ...): the
act, article, comma, where it was published and its words are in
:mod:`callguard.core.sources`, the one home of every citation.

Which rules run, for which purposes and with which parameters is policy
data: a TOML file (:mod:`callguard.core.policyfile`; the Italian default ships as
``callguard/policies/it.toml``). Its version is carried by every decision.

A guard fails closed: whatever could not be checked is denied with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

import phonenumbers

from callguard.core.facts import (
    Consent,
    Facts,
    Mandate,
    Operator,
    OptOut,
    PastCall,
    RegisterResult,
    When,
    intent_ref,
    proven_after,
    when_to_json,
)
from callguard.core.frozen import frozen
from callguard.core.hours import CallingHours, ExtraDay, callee_local_time, calling_window, next_window_start
from callguard.core.numbers import calling_code, is_geographic_or_mobile, is_mobile, region_of, regions_of_code
from callguard.core.schema import ALL_CLIENTS, Intent, Purpose, Reason, rfc3339

#: Version of the built-in defaults (tests and code); a policy file names its own.
POLICY_VERSION = "it-core/1"

Outcome = Literal["pass", "deny", "allow_exception", "skipped"]

#: The purposes the opposition register covers: advertising, direct sales,
#: market research and commercial communication (L. 5/2018 art. 1 c. 1).
#: Statistical surveys are not named there; on the safe side the register
#: applies to them too. ``service`` calls are outside it.
REGISTER_PURPOSES = frozenset({Purpose.MARKETING, Purpose.SURVEY, Purpose.STATISTICAL})
#: Telemarketing in the sense of the Codice di condotta 2024 (promotional calls
#: and market research), with statistical surveys on the safe side.
TELEMARKETING = REGISTER_PURPOSES
ALL_PURPOSES = frozenset(Purpose)

#: The rules, in the order they run and appear in the audit trail.
RULES = (
    "callee_number",
    "operator_certified",
    "operator_mandated",
    "opposition_register",
    "directory",
    "automated_calls",
    "internal_dnc",
    "caller_id",
    "calling_hours",
    "frequency_cap",
    "silent_calls",
    "campaign_silent_rate",
)
#: The rules of the United States pack (``jurisdiction = "us"`` in a policy
#: file), in the order they run: the shared ones (``callguard.core.policy``) with US
#: parameters and the pack's own (:mod:`callguard.core.uspolicy`).
US_RULES = (
    "callee_number",
    "operator_certified",
    "operator_mandated",
    "reassigned_numbers",
    "do_not_call_registers",
    "wireless_automated",
    "internal_dnc",
    "caller_id",
    "calling_hours",
    "frequency_cap",
    "campaign_silent_rate",
)
#: The rule sets a policy pack can be written for, by the pack's ``jurisdiction``.
CATALOGUES: dict[str, tuple[str, ...]] = {"it": RULES, "us": US_RULES}
#: Rules a policy cannot switch off: without them nothing could be checked.
ALWAYS_ON = frozenset({"callee_number"})


@dataclass(frozen=True, slots=True)
class RuleScope:
    """Whether a rule runs, and for which purposes."""

    enabled: bool = True
    purposes: frozenset[Purpose] = TELEMARKETING


def _default_scopes() -> dict[str, RuleScope]:
    return {
        "callee_number": RuleScope(purposes=ALL_PURPOSES),
        "operator_certified": RuleScope(purposes=ALL_PURPOSES),
        "operator_mandated": RuleScope(),
        "opposition_register": RuleScope(purposes=REGISTER_PURPOSES),
        "directory": RuleScope(),
        "automated_calls": RuleScope(),
        "internal_dnc": RuleScope(purposes=ALL_PURPOSES),
        "caller_id": RuleScope(purposes=ALL_PURPOSES),
        "calling_hours": RuleScope(),
        "frequency_cap": RuleScope(),
        "silent_calls": RuleScope(),
        "campaign_silent_rate": RuleScope(),
    }


def _us_default_scopes() -> dict[str, RuleScope]:
    return {
        "callee_number": RuleScope(purposes=ALL_PURPOSES),
        "operator_certified": RuleScope(purposes=ALL_PURPOSES),
        "operator_mandated": RuleScope(enabled=False),
        "reassigned_numbers": RuleScope(purposes=ALL_PURPOSES),
        "do_not_call_registers": RuleScope(),
        "wireless_automated": RuleScope(purposes=ALL_PURPOSES),
        "internal_dnc": RuleScope(purposes=ALL_PURPOSES),
        "caller_id": RuleScope(purposes=ALL_PURPOSES),
        "calling_hours": RuleScope(),
        "frequency_cap": RuleScope(),
        "campaign_silent_rate": RuleScope(),
    }


def default_scopes(jurisdiction: str) -> dict[str, RuleScope]:
    """The rules of a catalogue with their default scopes."""
    return _us_default_scopes() if jurisdiction == "us" else _default_scopes()


@dataclass(frozen=True, slots=True)
class CapLimit:
    """At most ``max_calls`` allowed calls per callee and client in any rolling ``window``."""

    window: timedelta
    max_calls: int


# --- the United States pack's parameters (policy data; rules in callguard.core.uspolicy) ---


@dataclass(frozen=True, slots=True)
class RegisterRule:
    """A do-not-call register the US pack checks, loaded under ``name``
    (``callguard register load --register NAME``)."""

    name: str
    #: ``national_dnc`` or ``state_dnc``: the reason a listed number is denied with
    reason: Reason
    #: a list more than this many days old is stale (``register_stale``); day D is usable on D..D+N
    stale_after_days: int
    #: the callees it applies to, by area code (empty: every callee of the pack)
    area_codes: frozenset[str] = frozenset()
    #: the consent bases that lift a listing (``consent``: a written agreement; the EBRs)
    exceptions: tuple[str, ...] = ("consent", "ebr_transaction", "ebr_inquiry")
    #: the state whose list this is (None: the national registry)
    state: str | None = None
    #: source keys (callguard.core.sources) the register is checked by
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AreaWindow:
    """A state's stricter calling window, for the callees of its area codes."""

    state: str
    area_codes: frozenset[str]
    window: tuple[time, time]
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AreaLimits:
    """A state's frequency caps, for the callees of its area codes."""

    state: str
    area_codes: frozenset[str]
    limits: tuple[CapLimit, ...]
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsSettings:
    """The parameters only the United States pack has (its ``policies/us.toml``)."""

    registers: tuple[RegisterRule, ...] = ()
    #: 16 CFR 310.2(q): an EBR lasts 18 months after the last purchase or transaction, 3 after an inquiry
    ebr_transaction_months: int = 18
    ebr_inquiry_months: int = 3
    #: 16 CFR 310.4(c), 47 CFR 64.1200(c)(1): 8:00 to 21:00 at the callee's location
    window: tuple[time, time] = (time(8, 0), time(21, 0))
    state_windows: tuple[AreaWindow, ...] = ()
    #: zones an area code spans beyond what libphonenumber lists for its numbers
    zones: dict[str, tuple[str, ...]] = field(default_factory=dict)
    state_limits: tuple[AreaLimits, ...] = ()

    def registers_for(self, area: str | None) -> tuple[RegisterRule, ...]:
        """The registers that apply to a callee of area code ``area``."""
        return tuple(r for r in self.registers if not r.area_codes or area in r.area_codes)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Parameters of the policy, each with the precedent for its default.

    The defaults here are the Italian policy (``policies/it.toml`` says the
    same, with its sources); tests build variants with ``dataclasses.replace``.
    """

    #: RPO_VALIDITY: a consultation result is valid 15 days (day D through D+14).
    register_max_age_days: int = 15
    #: L5_2018_ART1_C5: contracts ended not more than 30 days ago still allow calls.
    contract_grace_days: int = 30
    #: A public-directory extract is used for as many days as a register result
    #: (no text sets its age; see :func:`check_directory`).
    directory_max_age_days: int = 15
    #: A call request without an end counts for this many days (day D through
    #: D+1, or 48 hours from an instant): RPO_FAQ_REQUEST reads a request as
    #: one-off, so it is short, and it lifts one allowed call at most.
    request_validity_days: int = 2
    #: Day boundaries (register age, operator validity) are Italian days.
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("Europe/Rome"))
    version: str = POLICY_VERSION
    #: Which rules run for which purposes (a policy file can switch any off).
    scopes: dict[str, RuleScope] = field(default_factory=_default_scopes)
    #: AGCOM_CLI_SPOOFING: calls from abroad showing an Italian number are
    #: blocked by carriers (fixed and non-mobile from 2025-08-19, mobile from
    #: 2025-11-19), Italian days. None: no such block (the US pack).
    foreign_fixed_block_from: date | None = date(2025, 8, 19)
    foreign_mobile_block_from: date | None = date(2025, 11, 19)
    #: L5_2018_ART2_C1: require the 0844 (marketing, market research) / 0843
    #: (statistical surveys) prefix, or a geographic or mobile number.
    caller_id_require_prefix: bool = False
    caller_id_prefixes: dict[Purpose, str] = field(
        default_factory=lambda: {
            Purpose.MARKETING: "+390844",
            Purpose.SURVEY: "+390844",
            Purpose.STATISTICAL: "+390843",
        }
    )
    #: CODICE_CONDOTTA windows, national holidays (L151_2025), local patron saints.
    calling_hours: CallingHours = field(default_factory=CallingHours)
    #: No Italian law sets a number: 3 per rolling 24 h follows Florida and
    #: Oklahoma; 10 per 30 days is callguard's default, a business choice.
    frequency_limits: tuple[CapLimit, ...] = (
        CapLimit(timedelta(hours=24), 3),
        CapLimit(timedelta(days=30), 10),
    )
    #: GARANTE_SILENT_CALLS_BLOCK: no new call for 7 days after a silent one.
    silent_call_block: timedelta = timedelta(days=7)
    #: GARANTE_SILENT_CALLS_RATE: at most 3 silent calls per 100 answered calls per campaign.
    abandoned_rate_limit: float = 0.03
    #: GARANTE_SILENT_CALLS_RATE: the days over which a campaign's rate is counted.
    silent_rate_window_days: int = 30
    #: The rule catalogue the pack is written for (``it`` or ``us``): which rules
    #: exist and run, in which order (:data:`CATALOGUES`).
    jurisdiction: str = "it"
    #: The United States pack's own parameters (unused by the Italian rules).
    us: UsSettings = field(default_factory=UsSettings)
    #: A policy set: which pack decides which callee (None: this pack decides every callee).
    jurisdictions: Jurisdictions | None = None
    #: Source keys cited by the policy file per rule (``sources = [...]``), for ``policy sources``.
    rule_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``active_rules`` per purpose, worked out with the settings (every decision asks).
    _active: Mapping[Purpose, frozenset[str]] = field(init=False, repr=False, compare=False)
    #: The audit record's ``facts.lookback`` (:func:`lookback`), worked out with the settings.
    _lookback: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        active = {
            purpose: frozenset(
                rule for rule, scope in self.scopes.items() if scope.enabled and purpose in scope.purposes
            )
            for purpose in Purpose
        }
        object.__setattr__(self, "_active", MappingProxyType(active))
        looked_back = {
            "calls_hours": self.longest_cap_window / timedelta(hours=1),
            "calls_purposes": capped_purposes(self),
            "outcome_days": self.silent_rate_window_days if _rate_looked_up(self) else None,
        }
        object.__setattr__(self, "_lookback", frozen(looked_back))

    def applies(self, rule: str, purpose: Purpose) -> bool:
        return rule in self._active[purpose]

    def active_rules(self, purpose: Purpose) -> frozenset[str]:
        """The rules that run for ``purpose``."""
        return self._active[purpose]

    def skipped(self, rule: str, purpose: Purpose) -> RuleResult:
        """The audit entry of a rule that did not run, saying why."""
        scope = self.scopes.get(rule)
        if scope is None or not scope.enabled:
            return RuleResult(rule, "skipped", detail={"disabled": True})
        return RuleResult(rule, "skipped", detail={"purpose": purpose.value})

    @property
    def longest_cap_window(self) -> timedelta:
        """The longest frequency-cap window, state caps included (how far back the calls are read)."""
        limits = [*self.frequency_limits, *(lim for area in self.us.state_limits for lim in area.limits)]
        return max((limit.window for limit in limits), default=timedelta(0))

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules of this pack's catalogue, in the order they run."""
        return CATALOGUES[self.jurisdiction]

    def pack_for(self, callee: str | None, purpose: Purpose) -> PolicySettings | None:
        """The pack that decides a callee: this one, or under a policy set the
        pack of the callee's country; None when the set denies the call
        (``no_policy_for_country``)."""
        if self.jurisdictions is None:
            return self
        return self.jurisdictions.choose(callee, purpose)

    def named_registers(self, callee: str | None, purpose: Purpose) -> tuple[str, ...]:
        """The named registers to look up for a callee: those of the pack that
        decides it, when its ``do_not_call_registers`` rule runs for ``purpose``."""
        pack = self.pack_for(callee, purpose)
        if callee is None or pack is None or not pack.us.registers:
            return ()
        if not pack.applies("do_not_call_registers", purpose):
            return ()
        return tuple(rule.name for rule in pack.us.registers_for(area_code(callee)))

    def label(self) -> str:
        """The policy in one line: a pack's version, or a set's with its countries' packs."""
        sets = self.jurisdictions
        if sets is None:
            return self.version
        by_pack: dict[str, list[str]] = {}
        for region, pack in sorted(sets.packs.items()):
            by_pack.setdefault(pack.version, []).append(region)
        packs = "; ".join(f"{', '.join(regions)}: {version}" for version, regions in by_pack.items())
        deny = ", ".join(sorted(p.value for p in sets.deny_purposes)) or "nothing"
        return f"set {sets.version} ({packs}; other countries: {sets.other.version}, denying {deny})"

    def cap_limits(self, callee: str | None) -> tuple[CapLimit, ...]:
        """The frequency caps of one callee: the pack's, and its state's (by area code)."""
        if not self.us.state_limits or callee is None:
            return self.frequency_limits
        area = area_code(callee)
        extra = tuple(lim for state in self.us.state_limits if area in state.area_codes for lim in state.limits)
        return self.frequency_limits + extra if extra else self.frequency_limits

    def packs(self) -> tuple[PolicySettings, ...]:
        """Every pack that may decide (this one alone, or a set's packs and its fallback)."""
        if self.jurisdictions is None:
            return (self,)
        found: dict[int, PolicySettings] = {}
        for pack in (*self.jurisdictions.packs.values(), self.jurisdictions.other):
            found.setdefault(id(pack), pack)
        return tuple(found.values())


def area_code(e164: str) -> str | None:
    """The area code (NPA) of a North American number (``+1 212 …``: ``212``), else None."""
    return e164[2:5] if e164.startswith("+1") and len(e164) == 12 else None


#: A calling code whose regions have different packs (``Jurisdictions._by_code``).
_MIXED: Any = object()


@dataclass(frozen=True, slots=True)
class Jurisdictions:
    """A policy set: the pack of each country (region, ISO 3166-1 alpha-2) and
    what happens to callees of the others: ``deny_purposes`` are denied
    ``no_policy_for_country``, any other purpose is decided by ``other``."""

    version: str
    packs: dict[str, PolicySettings]
    other: PolicySettings
    deny_purposes: frozenset[Purpose]
    #: the pack names the set file gave, by region (``callguard policy show``)
    names: dict[str, str] = field(default_factory=dict)
    other_name: str = ""
    #: per calling code of a region with a pack: the one pack all its regions share, or
    #: ``_MIXED`` when they differ (worked out with the set; any other code has no pack)
    _by_code: Mapping[int, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = {phonenumbers.country_code_for_region(region) for region in self.packs} - {0}
        by_code: dict[int, Any] = {}
        for code in codes:
            packs = {id(p): p for p in (self.packs.get(r) for r in regions_of_code(code))}
            # every region of the code has the same pack (or none): no need to tell the regions apart
            by_code[code] = next(iter(packs.values())) if len(packs) == 1 else _MIXED
        object.__setattr__(self, "_by_code", MappingProxyType(by_code))

    def region(self, callee: str | None) -> str | None:
        return None if callee is None else region_of(callee)

    def choose(self, callee: str | None, purpose: Purpose) -> PolicySettings | None:
        """The pack that decides ``callee`` (E.164, None when invalid: the
        fallback pack, since an invalid number is denied alike everywhere), or
        None when the callee's country has no pack and ``purpose`` is denied."""
        if callee is None:
            return self.other
        code = calling_code(callee[:4])
        shared = self._by_code.get(code) if code is not None else _MIXED
        pack: PolicySettings | None = self.packs.get(region_of(callee) or "") if shared is _MIXED else shared
        if pack is not None:
            return pack
        return None if purpose in self.deny_purposes else self.other


@dataclass(frozen=True, slots=True)
class RuleResult:
    """How one rule judged one intent: the audit trail lists one per rule."""

    rule: str
    outcome: Outcome
    reasons: tuple[Reason, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)
    #: For a deny that time alone lifts: when this rule would pass again, all else equal.
    not_before: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "outcome": self.outcome, "reasons": list(self.reasons), "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Decision:
    """The guard's answer to one intent, with everything needed to justify it."""

    intent_id: str
    allow: bool
    reasons: tuple[Reason, ...]
    callee: str | None
    decided_at: datetime
    retryable: bool
    versions: dict[str, str | None]
    rules: tuple[RuleResult, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    #: When every deny reason is one that time alone lifts (calling hours,
    #: frequency caps, silent-call blocks): the earliest time a new intent
    #: could pass those rules, all else equal. A scheduling hint, not a promise.
    not_before: datetime | None = None
    #: On an allow after a silent or abandoned call: place it with an operator ready.
    requires_operator: bool = False

    def to_message(self) -> dict[str, Any]:
        """The decision as published on ``callguard.decisions`` (public contract)."""
        message = {
            "intent_id": self.intent_id,
            "decision": "allow" if self.allow else "deny",
            "reasons": list(self.reasons),
            "callee": self.callee,
            "decided_at": rfc3339(self.decided_at),
            "retryable": self.retryable,
            "versions": self.versions,
        }
        if self.not_before is not None:
            message["not_before"] = rfc3339(self.not_before)
        if self.requires_operator:
            message["requires_operator"] = True
        return message

    def to_audit(
        self, intent: Intent | None, source: dict[str, Any], message: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The audit record: the decision (``message``, when already built by
        :meth:`to_message`), the normalised inputs, every rule with its
        outcome, and the facts it used (the evidence)."""
        record = dict(self.to_message() if message is None else message)
        record["intent"] = None if intent is None else _intent_json(intent, self.callee)
        record["rules"] = [rule.to_json() for rule in self.rules]
        record["facts"] = self.facts
        record["source"] = source
        return record


def _operator_facts(operator: Operator) -> dict[str, Any]:
    """The operator as looked up: its certification and the caller IDs it declared."""
    return {**operator.to_json(), "caller_ids": list(operator.caller_ids)}


def lookback(settings: PolicySettings) -> dict[str, Any]:
    """How far back the past calls (the longest frequency-cap window; only
    calls of the purposes the caps count are recorded) and the campaign's
    outcomes (``None``: not looked up) were read for a decision (read-only:
    every decision's facts share it)."""
    return settings._lookback


def capped_purposes(settings: PolicySettings) -> list[str]:
    """The purposes whose allowed calls are counted (recorded) for the frequency caps."""
    return sorted(p.value for p in Purpose if settings.applies("frequency_cap", p))


def _intent_json(intent: Intent, callee: str | None) -> dict[str, Any]:
    return {
        "callee": callee,
        # the raw input is kept only when it could not be normalised: then it is the evidence
        "callee_input": intent.callee if callee is None else None,
        "operator_id": intent.operator_id,
        "client_id": intent.client_id,
        "purpose": intent.purpose.value,
        "caller_id": intent.caller_id,
        "campaign_id": intent.campaign_id,
        "requested_at": None if intent.requested_at is None else rfc3339(intent.requested_at),
        "automated": intent.automated,
        "script_id": intent.script_id,
        "list_source": intent.list_source,
    }


# --- rules --------------------------------------------------------------------


def check_callee(callee: str | None) -> RuleResult:
    """The callee must be a valid number.

    Source: DPR26_2022_ART8_C2 and L5_2018_ART1 protect numbers; a number that
    cannot be normalised cannot be looked up in the register, so the guard fails closed
    (``invalid_number``) instead of calling it unchecked.
    """
    if callee is None:
        return RuleResult("callee_number", "deny", (Reason.INVALID_NUMBER,))
    return RuleResult("callee_number", "pass", detail={"callee": callee})


def check_operator(operator_id: str, operator: Operator | None, today: date) -> RuleResult:
    """The call centre must be on the certification list, active and in term.

    Source: CODICE_CONDOTTA (callers and their clients work only with
    call centres registered in the ROC and bound by the code); a suspended or
    revoked certificate, or one outside ``valid_from..valid_until`` (inclusive
    Italian days), does not count. Applies to every purpose.
    """
    if operator is None:
        return RuleResult("operator_certified", "deny", (Reason.OPERATOR_UNKNOWN,), {"operator_id": operator_id})
    reasons: list[Reason] = []
    if operator.status != "active":
        reasons.append(Reason.OPERATOR_INACTIVE)
    if not operator.valid_from <= today <= operator.valid_until:
        reasons.append(Reason.OPERATOR_EXPIRED)
    detail = operator.to_json()
    return RuleResult("operator_certified", "deny" if reasons else "pass", tuple(reasons), detail)


def check_mandate(intent: Intent, mandates: tuple[Mandate, ...], today: date) -> RuleResult:
    """The call centre must hold a mandate from this client, in force today.

    Source: CODICE_CONDOTTA_FILIERA: the client (committente) works only with
    suppliers bound to it by contract and adhering to the code, and answers
    for its supply chain. A mandate counts ``valid_from..valid_until``, both
    Italian days included; no mandate of this client for this operator in
    force today gives ``operator_not_mandated``.
    """
    detail: dict[str, Any] = {"client_id": intent.client_id, "operator_id": intent.operator_id}
    for mandate in mandates:
        if mandate.valid_from <= today <= mandate.valid_until:
            detail["mandate"] = mandate.to_json()
            return RuleResult("operator_mandated", "pass", detail=detail)
    detail["mandates"] = [m.to_json() for m in mandates]
    return RuleResult("operator_mandated", "deny", (Reason.OPERATOR_NOT_MANDATED,), detail)


def request_in_force(
    intent: Intent, consents: tuple[Consent, ...], calls: tuple[PastCall, ...], now: datetime, settings: PolicySettings
) -> Consent | None:
    """The person's own request for a call by this client, if it still lifts the checks.

    Source: CODICE_CONDOTTA_ART10_C2 ("laddove l'interessato non abbia chiesto
    espressamente la chiamata o la richiamata") and RPO_FAQ_REQUEST (no
    register check for a call the person asked for, but "una tantum"). The
    request counts from ``granted_at`` until ``ends_at`` (that day included)
    or, without one, for ``request_validity_days``; and only until this guard
    allowed one call to the callee for this client after it (the intent
    itself does not count, so a redelivery gets the same answer). Calls are
    known only where the frequency cap records them.
    """
    tz = settings.timezone
    ref = intent_ref(intent.intent_id)
    for consent in consents:
        if consent.client_id != intent.client_id or consent.basis != "request":
            continue
        ends = consent.ends_at
        if ends is None:
            validity = timedelta(days=settings.request_validity_days)
            granted = consent.granted_at
            ends = granted + validity if isinstance(granted, datetime) else granted + validity - timedelta(days=1)
        if not consent_in_force(replace(consent, ends_at=ends), now, tz):
            continue
        if any(call.ref != ref and not proven_after(consent.granted_at, call.at, tz) for call in calls):
            continue  # used: the request was for one call (a call the same day as it may have followed it)
        return consent
    return None


def most_recent_result(results: tuple[RegisterResult, ...]) -> RegisterResult | None:
    """The result that decides for this client.

    Source: :data:`~callguard.core.sources.RPO_FAQ_CONTROLLERS`: each independent
    controller consults the register itself, and results differ between
    controllers because a person may withdraw the opposition for chosen
    companies only. So a result loaded for every client (``*``) may only
    deny: an ``opposed`` ``*`` result counts for every client, a ``clear``
    ``*`` result is nobody's check. Among the client's own results and the
    ``*`` opposed ones the most recent consultation decides. The texts do not
    order two results of one day, so the safe side does: an ``opposed`` result
    wins, and of two opposed ones the later registration (a renewal revokes the
    consents given before it, L5_2018_ART1_C5), then the client's own. The
    choice never depends on the order the store lists them in.
    """
    counting = (result for result in results if result.opposed or result.client_id != ALL_CLIENTS)
    return max(counting, key=_recency, default=None)


def _recency(result: RegisterResult) -> tuple[date, bool, date, bool, bool]:
    """:func:`most_recent_result`'s order; the last key (a stated registration day over
    one inferred from the result's day) only keeps the choice independent of the listing order."""
    own = result.client_id != ALL_CLIENTS
    return result.as_of, result.opposed, _registered_on(result), own, result.registered_at is not None


def has_begun(when: When, now: datetime, tz: tzinfo) -> bool:
    """True once ``when`` has come: an instant at or before now, a day at or before today."""
    if isinstance(when, datetime):
        return when <= now
    return when <= now.astimezone(tz).date()


def consent_in_force(consent: Consent, now: datetime, tz: tzinfo) -> bool:
    """A consent counts from its grant until it ends (an ``ends_at`` day is included)."""
    if not has_begun(consent.granted_at, now, tz):
        return False
    if consent.ends_at is None:
        return True
    if isinstance(consent.ends_at, datetime):
        return now < consent.ends_at
    return now.astimezone(tz).date() <= consent.ends_at


def contract_in_grace(contract: Consent, now: datetime, settings: PolicySettings) -> bool:
    """A contract counts from its start while in force and for
    ``contract_grace_days`` (30) after it ended, the 30th day included.

    Source: :data:`~callguard.core.sources.L5_2018_ART1_C5`: "contratti ... cessati
    da non più di trenta giorni". Ended on day E (a day), it counts through
    E+30 and not from E+31; ended at an instant, it counts while at most 30
    days have passed.
    """
    tz = settings.timezone
    if not has_begun(contract.granted_at, now, tz):
        return False
    if contract.ends_at is None:
        return True
    grace = timedelta(days=settings.contract_grace_days)
    if isinstance(contract.ends_at, datetime):
        return now - contract.ends_at <= grace
    return now.astimezone(tz).date() - contract.ends_at <= grace


def check_register(
    intent: Intent,
    results: tuple[RegisterResult, ...],
    consents: tuple[Consent, ...],
    now: datetime,
    settings: PolicySettings,
    request: Consent | None = None,
) -> RuleResult:
    """Marketing, survey and statistical calls need a fresh, clear register result, or an exception.

    Sources, step by step:

    1. No result that decides for this client (:func:`most_recent_result`;
       RPO_FAQ_CONTROLLERS: a clear result loaded for every client is
       nobody's check): ``not_checked``. DPR26_2022_ART8_C2 obliges callers to
       consult the register before calling; a number never checked must not
       be called.
    2. The deciding result is 15 days old or older (DPR26_2022_ART8_C2,
       RPO_VALIDITY: valid 15 days, day D through D+14): ``register_stale``.
    3. The result is ``opposed``: ``opposition_register`` (L5_2018_ART1),
       unless an exception for **this client** holds (the RPO's FAQ: the
       contract waiver covers only the contracting company):

       - a ``contract`` in force, or ended not more than 30 days ago
         (L5_2018_ART1_C5): allow with ``contract``;
       - a ``consent`` given after the person registered (L5_2018_ART1_C5:
         registration revokes earlier consents): allow with ``consent``.
         When the registration day is unknown, only a consent after the
         result's as-of day counts, since nothing else proves it came later.

    A stale ``opposed`` result gives both ``register_stale`` and
    ``opposition_register``: a deny lists every reason that applies.
    ``service`` calls are outside the register (``skipped``).

    A call the person asked this client for (``request``,
    :func:`request_in_force`) needs no register check (CODICE_CONDOTTA_ART10_C2,
    RPO_FAQ_REQUEST): allow with ``request``, whatever the result.
    """
    result = most_recent_result(results)
    if request is not None:
        detail_request = {"result": None if result is None else result.to_json(), "exceptions": [request.to_json()]}
        return RuleResult("opposition_register", "allow_exception", (Reason.REQUEST,), detail_request)
    if result is None:
        return RuleResult("opposition_register", "deny", (Reason.NOT_CHECKED,), {"result": None})
    tz = settings.timezone
    age_days = (now.astimezone(tz).date() - result.as_of).days
    detail: dict[str, Any] = {
        "result": result.to_json(),
        "age_days": age_days,
        "max_age_days": settings.register_max_age_days,
    }
    reasons: list[Reason] = []
    if age_days >= settings.register_max_age_days:
        reasons.append(Reason.REGISTER_STALE)
    if result.opposed:
        exceptions = _register_exceptions(intent.client_id, result, consents, now, settings)
        if exceptions and not reasons:
            detail["exceptions"] = [consent.to_json() for _, consent in exceptions]
            return RuleResult(
                "opposition_register", "allow_exception", tuple(dict.fromkeys(r for r, _ in exceptions)), detail
            )
        reasons.append(Reason.OPPOSITION_REGISTER)
    return RuleResult("opposition_register", "deny" if reasons else "pass", tuple(reasons), detail)


def _registered_on(result: RegisterResult) -> date:
    """The day a registration is proven by: its own day, or failing that the result's as-of day."""
    return result.registered_at if result.registered_at is not None else result.as_of


def _consent_counts(consent: Consent, registered: date | None, now: datetime, tz: tzinfo) -> bool:
    """A ``consent`` in force now and, for a registered number, given provably
    after the registration (L5_2018_ART1_C5: registering revokes earlier consents)."""
    return (
        consent.basis == "consent"
        and consent_in_force(consent, now, tz)
        and (registered is None or proven_after(consent.granted_at, registered, tz))
    )


def _register_exceptions(
    client_id: str, result: RegisterResult, consents: tuple[Consent, ...], now: datetime, settings: PolicySettings
) -> list[tuple[Reason, Consent]]:
    tz = settings.timezone
    registered = _registered_on(result)
    found: list[tuple[Reason, Consent]] = []
    for consent in consents:
        if consent.client_id != client_id:
            continue
        if consent.basis == "contract" and contract_in_grace(consent, now, settings):
            found.append((Reason.CONTRACT, consent))
        elif _consent_counts(consent, registered, now, tz):
            found.append((Reason.CONSENT, consent))
    found.sort(key=lambda pair: pair[0] != Reason.CONTRACT)
    return found


def valid_consent(
    client_id: str,
    register: tuple[RegisterResult, ...],
    consents: tuple[Consent, ...],
    now: datetime,
    settings: PolicySettings,
) -> Consent | None:
    """A consent of this client that the register rule accepts, or None.

    In force now, and, when the decisive register result says the number is
    registered, given provably after the registration (L5_2018_ART1_C5:
    registering revokes earlier consents; when the registration day is
    unknown, after the result's as-of day). A ``contract`` is not a consent
    here (see :func:`check_directory`).
    """
    tz = settings.timezone
    result = most_recent_result(register)
    registered: date | None = None
    if result is not None and result.opposed:
        registered = _registered_on(result)
    for consent in consents:
        if consent.client_id == client_id and _consent_counts(consent, registered, now, tz):
            return consent
    return None


def check_directory(
    intent: Intent, facts: Facts, now: datetime, settings: PolicySettings, request: Consent | None = None
) -> RuleResult:
    """A number not in the public telephone directories is called only with a valid consent.

    Source: CODICE_CONDOTTA_ART10_C2: a supplier may call "le utenze
    telefoniche non presenti negli elenchi telefonici pubblici per le quali
    risulti presente un idoneo consenso e le utenze telefoniche presenti negli
    elenchi telefonici pubblici che non siano iscritte al RPO". A clear
    register result is therefore enough only for a listed number.

    - Listed: the callee is in the directory extract in use, and the extract
      is younger than ``directory_max_age_days`` (15 by default: no text sets
      an age for an extract of the directories' single database, so it is
      used as long as a register result, RPO_VALIDITY; day D through D+14).
    - Otherwise (not listed, no extract loaded, or the extract too old): a
      valid consent of this client (:func:`valid_consent`) lifts it, else
      ``consent_required``.
    - The person's own request for the call (:func:`request_in_force`)
      lifts it too: the comma applies "laddove l'interessato non abbia chiesto
      espressamente la chiamata o la richiamata".
    - A contract does not lift it: the article asks for "idoneo consenso",
      and L5_2018_ART1_C5's contract exception is an exception to the
      register only. On the safe side, a customer's unlisted number needs
      the customer's consent.
    """
    as_of = facts.directory_as_of
    detail: dict[str, Any] = {"extract": None if as_of is None else as_of.isoformat(), "listed": facts.listed}
    if as_of is None:
        why = "no public-directory extract loaded"
    else:
        age_days = (now.astimezone(settings.timezone).date() - as_of).days
        detail["age_days"] = age_days
        detail["max_age_days"] = settings.directory_max_age_days
        if age_days >= settings.directory_max_age_days:
            why = "the public-directory extract is too old"
        elif facts.listed:
            return RuleResult("directory", "pass", detail=detail)
        else:
            why = "not in the public directories"
    consent = valid_consent(intent.client_id, facts.register, facts.consents, now, settings)
    if consent is not None:
        detail["exceptions"] = [consent.to_json()]
        return RuleResult("directory", "allow_exception", (Reason.CONSENT,), detail)
    if request is not None:
        detail["exceptions"] = [request.to_json()]
        return RuleResult("directory", "allow_exception", (Reason.REQUEST,), detail)
    detail["why"] = why
    return RuleResult("directory", "deny", (Reason.CONSENT_REQUIRED,), detail)


_NOT_AUTOMATED = RuleResult("automated_calls", "pass", detail=frozen({"automated": False}))


def check_automated(intent: Intent, facts: Facts, now: datetime, settings: PolicySettings) -> RuleResult:
    """A call placed by an automated system without an operator needs the callee's consent.

    Source: CODICE_PRIVACY_ART130_C1_C2: automated calling systems
    without an operator are allowed for advertising, direct sales, market
    research and commercial communication only with the person's consent,
    whatever the register says. Statistical surveys are not named there; on
    the safe side the shipped policy applies the rule to them too. A valid
    consent of this client (:func:`valid_consent`) lifts it; a contract does
    not (the article asks for consent), nor does a request for a call (a
    person who asks to be called has not consented to a machine).
    """
    if not intent.automated:
        return _NOT_AUTOMATED
    detail: dict[str, Any] = {"automated": True}
    consent = valid_consent(intent.client_id, facts.register, facts.consents, now, settings)
    if consent is not None:
        detail["exceptions"] = [consent.to_json()]
        return RuleResult("automated_calls", "allow_exception", (Reason.CONSENT,), detail)
    return RuleResult("automated_calls", "deny", (Reason.CONSENT_REQUIRED,), detail)


def check_optout(
    client_id: str,
    optouts: tuple[OptOut, ...],
    consents: tuple[Consent, ...],
    now: datetime,
    settings: PolicySettings,
    request: Consent | None = None,
) -> RuleResult:
    """A callee on the internal do-not-call list for this client (or ``*``) is not called.

    Source: GDPR art. 21(3) (objection to direct marketing must be honoured)
    and CODICE_CONDOTTA. Exception: a ``consent`` for this client
    given provably after **every** applicable opt-out (the person changed
    their mind); a contract does not override an explicit opt-out.
    """
    applicable = tuple(o for o in optouts if o.client_id in (client_id, ALL_CLIENTS))
    if not applicable:
        return RuleResult("internal_dnc", "pass")
    tz = settings.timezone
    detail: dict[str, Any] = {"optouts": [o.to_json() for o in applicable]}
    for consent in consents:
        if (
            consent.client_id == client_id
            and consent.basis == "consent"
            and consent_in_force(consent, now, tz)
            and all(proven_after(consent.granted_at, o.at, tz) for o in applicable)
        ):
            detail["exceptions"] = [consent.to_json()]
            return RuleResult("internal_dnc", "allow_exception", (Reason.CONSENT,), detail)
    if request is not None and all(proven_after(request.granted_at, o.at, tz) for o in applicable):
        # the person asked for this call after opting out; an opt-out after the request still denies
        detail["exceptions"] = [request.to_json()]
        return RuleResult("internal_dnc", "allow_exception", (Reason.REQUEST,), detail)
    return RuleResult("internal_dnc", "deny", (Reason.INTERNAL_DNC,), detail)


def foreign_block_start(caller: str, settings: PolicySettings) -> date | None:
    """From which day carriers block a call from abroad that shows ``caller``
    (an Italian number), or None for a foreign number."""
    if not caller.startswith("+39"):
        return None
    return settings.foreign_mobile_block_from if is_mobile(caller) else settings.foreign_fixed_block_from


def check_caller_id(
    intent: Intent, caller: str | None, operator: Operator | None, settings: PolicySettings, now: datetime
) -> RuleResult:
    """The number shown to the callee must be callable and declared by the operator.

    Source: L5_2018_ART2_C1 (every call-centre call presents a callable
    caller ID: the shipped policy applies this rule to ``service`` calls too)
    and CODICE_CONDOTTA (identifiable, callable caller IDs; every
    number a call centre uses declared in the ROC, here the ``caller_ids``
    column of the operators list). ``caller`` is the E.164 form of the
    intent's ``caller_id``, ``None`` when it is missing, withheld
    ("anonymous", "private", ...) or not a number: ``caller_id_missing``. A
    number the operator did not declare: ``caller_id_not_declared``. An
    unknown operator is already denied by ``operator_certified``.

    An operator placing calls from outside Italy (``country`` of the
    operators list) that shows an Italian number: ``caller_id_foreign_origin``
    (AGCOM_CLI_SPOOFING: carriers block such calls, fixed and other
    non-mobile numbers from 19 August 2025, mobile numbers from 19 November
    2025, Italian days; the roaming exception is not assumed for a call
    centre).

    Optional (``require_prefix``), AGCOM numbering: a marketing call shows an
    0844 number and a survey an 0843 number, or else a geographic or mobile
    number; anything else (toll-free, premium, shared cost):
    ``caller_id_wrong_prefix``.
    """
    if caller is None:
        shown = "missing" if intent.caller_id is None else "withheld or not a callable number"
        return RuleResult("caller_id", "deny", (Reason.CALLER_ID_MISSING,), {"caller_id": shown})
    detail: dict[str, Any] = {"caller_id": caller}
    if operator is None:
        return RuleResult("caller_id", "skipped", detail={**detail, "operator": None})
    reasons: list[Reason] = []
    if caller not in operator.caller_ids:
        reasons.append(Reason.CALLER_ID_NOT_DECLARED)
        detail["declared"] = len(operator.caller_ids)
    blocked_from = None if operator.country == "IT" else foreign_block_start(caller, settings)
    if blocked_from is not None and now.astimezone(settings.timezone).date() >= blocked_from:
        reasons.append(Reason.CALLER_ID_FOREIGN_ORIGIN)
        detail["operator_country"] = operator.country
        detail["blocked_since"] = blocked_from.isoformat()
    prefix = settings.caller_id_prefixes.get(intent.purpose)
    if settings.caller_id_require_prefix and prefix is not None:
        detail["required_prefix"] = prefix
        if not caller.startswith(prefix) and not is_geographic_or_mobile(caller):
            reasons.append(Reason.CALLER_ID_WRONG_PREFIX)
    return RuleResult("caller_id", "deny" if reasons else "pass", tuple(reasons), detail)


def _window_text(window: tuple[Any, Any] | None) -> str | None:
    return None if window is None else f"{window[0].isoformat('minutes')}-{window[1].isoformat('minutes')}"


def check_calling_hours(callee: str, now: datetime, settings: PolicySettings) -> RuleResult:
    """Calls only inside the callee's local calling window of the day.

    Source: CODICE_CONDOTTA: Monday-Friday 09:00-20:00, Saturday and
    the day before a public holiday 10:00-19:00, never on Sundays or public
    holidays (national calendar, :mod:`callguard.core.hours`, plus the policy's
    local patron-saint days for geographic numbers). Judged on the decision
    time, never on a time the dialer claims. The callee's zone comes from
    the numbering plan only when every zone it allows agrees at this instant;
    otherwise ``timezone_unknown`` (a zone guessed from a number is a known
    failure of compliance tools).
    """
    local = callee_local_time(callee, now)
    if local is None:
        return RuleResult("calling_hours", "deny", (Reason.TIMEZONE_UNKNOWN,), {"zone": None})
    hours = settings.calling_hours
    extra = hours.extra_days(callee)
    # the verdict depends on the number only through its zone and local days:
    # a batch's intents share one decision time, so it is worked out once
    key = (id(hours), local, local.tzinfo, extra)
    cached = _HOURS_VERDICTS.get(key)
    if cached is None:
        if len(_HOURS_VERDICTS) >= 4096:
            _HOURS_VERDICTS.clear()
        cached = _HOURS_VERDICTS[key] = (hours, _calling_hours_verdict(local, extra, hours))
    return cached[1]


#: Calling-hours verdicts (read-only: decisions share them) by (the hours' identity,
#: local time, zone, local days). Keyed by identity, since hashing the hours' holidays
#: for every intent would cost what the cache saves; each entry holds its hours, so
#: their id is not reused meanwhile.
_HOURS_VERDICTS: dict[tuple[int, datetime, tzinfo | None, tuple[ExtraDay, ...]], tuple[CallingHours, RuleResult]] = {}


def _calling_hours_verdict(local: datetime, extra: tuple[ExtraDay, ...], hours: CallingHours) -> RuleResult:
    """The verdict at ``local``, its detail read-only (cached, and shared by decisions)."""
    window = calling_window(local.date(), extra, hours)
    detail: dict[str, Any] = {
        "local_time": local.isoformat(timespec="seconds"),
        "zone": str(local.tzinfo),
        "window": _window_text(window),
    }
    if window is not None and window[0] <= local.time().replace(tzinfo=None) < window[1]:
        return RuleResult("calling_hours", "pass", detail=frozen(detail))
    opens = next_window_start(local, extra, hours)
    detail["next_window"] = None if opens is None else rfc3339(opens)
    return RuleResult("calling_hours", "deny", (Reason.OUTSIDE_CALLING_HOURS,), frozen(detail), opens)


def check_frequency(intent: Intent, calls: tuple[PastCall, ...], now: datetime, settings: PolicySettings) -> RuleResult:
    """At most N allowed calls per callee and client in each rolling window.

    Source: a policy limit: the Italian default is 3 per 24 h, the
    cap Florida and Oklahoma set, and 10 per 30 days; CODICE_CONDOTTA asks
    adherents not to contact people insistently. Counted from the
    calls this guard allowed, per client; an intent redelivered after it was
    allowed finds itself among them and keeps its allow (it is counted once).
    """
    return frequency_result(intent, calls, now, settings.frequency_limits)


def frequency_result(
    intent: Intent, calls: tuple[PastCall, ...], now: datetime, limits: tuple[CapLimit, ...]
) -> RuleResult:
    """:func:`check_frequency` with the caps given (the US pack adds a state's)."""
    if not calls:  # the common case: nobody called this callee for this client lately
        return _no_calls_yet(limits)
    ref = intent_ref(intent.intent_id)
    if any(call.ref == ref for call in calls):
        return RuleResult("frequency_cap", "pass", detail={"already_counted": True})
    counts: list[dict[str, Any]] = []
    over: list[datetime] = []
    for limit in limits:
        since = now - limit.window
        # a call stamped after ``now`` still counts: another worker's clock may run ahead
        inside = sorted(call.at for call in calls if call.at > since)
        counts.append({"window_hours": limit.window / timedelta(hours=1), "max": limit.max_calls, "calls": len(inside)})
        if len(inside) >= limit.max_calls:
            # the window frees up when enough of its calls have aged out of it
            over.append(inside[len(inside) - limit.max_calls] + limit.window)
    detail: dict[str, Any] = {"limits": counts}
    if not over:
        return RuleResult("frequency_cap", "pass", detail=detail)
    detail["next_allowed"] = rfc3339(max(over))
    return RuleResult("frequency_cap", "deny", (Reason.FREQUENCY_CAP,), detail, max(over))


@lru_cache(maxsize=16)
def _no_calls_yet(limits: tuple[CapLimit, ...]) -> RuleResult:
    counts = [
        {"window_hours": limit.window / timedelta(hours=1), "max": limit.max_calls, "calls": 0} for limit in limits
    ]
    return RuleResult("frequency_cap", "pass", detail=frozen({"limits": counts}))


def check_silent_calls(silent_at: datetime | None, now: datetime, settings: PolicySettings) -> RuleResult:
    """No new call for 7 days after a silent or abandoned call by the same client.

    Source: GARANTE_SILENT_CALLS_BLOCK: after a silent call, no new call to
    that number for at least 7 days. Dialers report outcomes on
    ``callguard.outcomes``; the block applies to the client whose campaign
    made the silent call, and ends exactly 7 days (168 hours) after it.
    """
    if silent_at is None:
        return RuleResult("silent_calls", "pass")
    until = silent_at + settings.silent_call_block
    detail = {"silent_call_at": rfc3339(silent_at), "blocked_until": rfc3339(until)}
    if now < until:
        return RuleResult("silent_calls", "deny", (Reason.RECENT_SILENT_CALL,), detail, until)
    return RuleResult("silent_calls", "pass", detail=detail)


def operator_required(intent: Intent, facts: Facts, settings: PolicySettings) -> bool:
    """Whether an allowed call must be placed with an operator ready.

    Source: GARANTE_SILENT_CALLS_BLOCK: after the block, the next call to
    that number must be placed with an operator available. True while a
    silent or abandoned call by this client is on record and no call this
    guard allowed since the block ended is known (the intent itself does not
    count, so a redelivered intent gets the same answer).
    """
    if facts.silent_at is None:
        return False
    until = facts.silent_at + settings.silent_call_block
    ref = intent_ref(intent.intent_id)
    return not any(call.at >= until and call.ref != ref for call in facts.calls)


#: Outcomes that count as silent calls (a person answered, no operator).
SILENT_OUTCOME_NAMES = ("silent", "abandoned")


def _rate_looked_up(settings: PolicySettings) -> bool:
    """Whether a campaign's outcomes are looked up at all (the rule runs for
    some purpose, in some pack of a policy set)."""
    for pack in settings.packs():
        scope = pack.scopes.get("campaign_silent_rate")
        if scope is not None and scope.enabled and bool(scope.purposes):
            return True
    return False


def silent_rate_days(now: datetime, settings: PolicySettings) -> tuple[date, ...]:
    """The Italian days whose reported outcomes make a campaign's silent-call
    rate now: today and the ``silent_rate_window_days`` - 1 days before it
    (none when the rule is off for every purpose). Outcomes are counted per
    day of ``settings.timezone`` (a policy set's: its fallback pack's); the
    packs of a set share one window (checked when the set is read)."""
    if not _rate_looked_up(settings):
        return ()
    today = now.astimezone(settings.timezone).date()
    window = max(pack.silent_rate_window_days for pack in settings.packs())
    return tuple(today - timedelta(days=back) for back in range(window))


def check_campaign_silent_rate(outcomes: dict[str, int] | None, settings: PolicySettings) -> RuleResult:
    """A campaign over 3 silent calls per 100 answered calls is stopped until it is back under.

    Source: GARANTE_SILENT_CALLS_RATE: at most 3 silent calls for every 100
    calls answered, per campaign, over ``silent_rate_window_days`` days of
    reported outcomes (``callguard.outcomes``). Silent and abandoned
    outcomes count as silent calls; ``answered`` ones as answered calls. A
    campaign with silent calls and no answered call is over the limit. The
    limit holds at exactly 3 per 100 (3/100 passes, 4/100 and 3/99 do not).
    """
    if outcomes is None:
        return RuleResult("campaign_silent_rate", "pass", detail={"outcomes": None})
    silent = sum(outcomes.get(name, 0) for name in SILENT_OUTCOME_NAMES)
    answered = outcomes.get("answered", 0)
    detail: dict[str, Any] = {
        "silent": silent,
        "answered": answered,
        "limit": settings.abandoned_rate_limit,
        "window_days": settings.silent_rate_window_days,
    }
    # exact in integers: silent / answered > limit, with the limit in basis points
    if silent * 10_000 > round(settings.abandoned_rate_limit * 10_000) * answered:
        return RuleResult("campaign_silent_rate", "deny", (Reason.CAMPAIGN_SILENT_RATE,), detail)
    return RuleResult("campaign_silent_rate", "pass", detail=detail)


# --- the decision ---------------------------------------------------------------


def decide(
    intent: Intent,
    callee: str | None,
    facts: Facts | None,
    now: datetime,
    settings: PolicySettings,
    caller: str | None = None,
) -> Decision:
    """Decide one intent by the pack that decides its callee.

    Under a policy set (``settings.jurisdictions``) the callee's country
    chooses the pack (:meth:`Jurisdictions.choose`); a country without one
    denies ``no_policy_for_country`` for the set's ``deny_purposes``. The
    decision carries the pack's version in ``versions.policy`` and the set's
    in ``versions.policy_set``, and its audit record says which pack decided
    (rule ``jurisdiction``). A single pack decides every callee, as before.
    """
    sets = settings.jurisdictions
    if sets is None:
        return _decide_pack(intent, callee, facts, now, settings, caller)
    pack = sets.choose(callee, intent.purpose)
    region = sets.region(callee)
    if pack is None:
        return _no_policy(intent, callee, now, sets, region)
    chosen = RuleResult(
        "jurisdiction", "pass", detail={"country": region, "pack": pack.version, "policy_set": sets.version}
    )
    return _decide_pack(intent, callee, facts, now, pack, caller, chosen)


def _no_policy(intent: Intent, callee: str | None, now: datetime, sets: Jurisdictions, region: str | None) -> Decision:
    """The deny for a callee whose country has no pack (the set's ``deny_purposes``).

    A guard fails closed: a country whose rules callguard does not hold is
    not called for marketing or market research at all.
    """
    rules = (
        check_callee(callee),
        RuleResult(
            "jurisdiction",
            "deny",
            (Reason.NO_POLICY_FOR_COUNTRY,),
            {"country": region, "pack": None, "policy_set": sets.version, "purpose": intent.purpose.value},
        ),
    )
    return Decision(
        intent_id=intent.intent_id,
        allow=False,
        reasons=(Reason.NO_POLICY_FOR_COUNTRY,),
        callee=callee,
        decided_at=now,
        retryable=False,
        versions={"policy": sets.version, "policy_set": sets.version},
        rules=rules,
    )


def _decide_pack(
    intent: Intent,
    callee: str | None,
    facts: Facts | None,
    now: datetime,
    settings: PolicySettings,
    caller: str | None = None,
    chosen: RuleResult | None = None,
) -> Decision:
    """Decide by one pack; ``chosen``: under a set, the ``jurisdiction`` entry
    (the audit record lists it second, and ``versions.policy_set`` follows)."""
    if settings.jurisdiction == "us":
        return uspolicy.decide_us(intent, callee, facts, now, settings, caller, chosen)
    return _decide_it(intent, callee, facts, now, settings, caller, chosen)


def verdict(rules: Sequence[RuleResult]) -> tuple[tuple[Reason, ...], tuple[Reason, ...], datetime | None]:
    """What every pack's rules add up to: the deny reasons (none: an allow),
    the reasons the decision carries (on an allow, the exceptions that lifted
    a rule), and, when every denying rule is one that time alone lifts, the
    latest of their ``not_before``."""
    denying = [rule for rule in rules if rule.outcome == "deny"]
    deny = tuple(dict.fromkeys(reason for rule in denying for reason in rule.reasons))
    if not deny:
        lifted = (r for rule in rules if rule.outcome == "allow_exception" for r in rule.reasons)
        return deny, tuple(dict.fromkeys(lifted)), None
    waits = [rule.not_before for rule in denying]
    not_before = max(wait for wait in waits if wait is not None) if all(w is not None for w in waits) else None
    return deny, deny, not_before


def pack_decision(
    intent: Intent,
    callee: str | None,
    now: datetime,
    rules: list[RuleResult],
    versions: dict[str, str | None],
    facts_json: dict[str, Any],
    chosen: RuleResult | None,
    requires_operator: bool = False,
) -> Decision:
    """What every pack ends with: its rules added up by :func:`verdict` into
    the decision, with the policy set's version last when a set chose the
    pack; an operator is required only on an allow."""
    deny, reasons, not_before = verdict(rules)
    if chosen is not None:
        versions["policy_set"] = chosen.detail["policy_set"]
    return Decision(
        intent_id=intent.intent_id,
        allow=not deny,
        reasons=reasons,
        callee=callee,
        decided_at=now,
        retryable=Reason.LOOKUP_UNAVAILABLE in deny,
        versions=versions,
        rules=tuple(rules),
        facts=facts_json,
        not_before=not_before,
        requires_operator=requires_operator and not deny,
    )


def pack_start(
    intent: Intent,
    callee: str | None,
    facts: Facts | None,
    now: datetime,
    settings: PolicySettings,
    caller: str | None,
    chosen: RuleResult | None,
) -> tuple[list[RuleResult], dict[str, str | None], dict[str, Any]]:
    """What every pack decides first: the callee's number (and the pack a set
    chose), then ``lookup_unavailable`` when the stores could not answer, or
    else who calls: the operator's certification and mandate. Returns the
    rules so far, the versions and the facts for the audit record, which the
    pack goes on filling."""
    rules: list[RuleResult] = [check_callee(callee)] if chosen is None else [check_callee(callee), chosen]
    versions: dict[str, str | None] = {"policy": settings.version}
    facts_json: dict[str, Any] = {}
    if facts is None:
        rules.append(
            RuleResult(
                "lookup",
                "deny",
                (Reason.LOOKUP_UNAVAILABLE,),
                {"error": "stores did not answer; nothing could be checked"},
            )
        )
        return rules, versions, facts_json
    versions.update(facts.versions)
    operator, on = facts.operator, settings.active_rules(intent.purpose)
    today = now.astimezone(settings.timezone).date()
    rules.append(
        check_operator(intent.operator_id, operator, today)
        if "operator_certified" in on
        else settings.skipped("operator_certified", intent.purpose)
    )
    rules.append(
        check_mandate(intent, facts.mandates, today)
        if "operator_mandated" in on
        else settings.skipped("operator_mandated", intent.purpose)
    )
    facts_json["operator"] = None if operator is None else _operator_facts(operator)
    facts_json["mandates"] = [m.to_json() for m in facts.mandates]
    facts_json["caller"] = caller
    return rules, versions, facts_json


def _decide_it(
    intent: Intent,
    callee: str | None,
    facts: Facts | None,
    now: datetime,
    settings: PolicySettings,
    caller: str | None = None,
    chosen: RuleResult | None = None,
) -> Decision:
    """Decide one intent by an Italian pack.

    ``callee`` is the E.164 form of ``intent.callee`` (``None`` when invalid),
    ``caller`` that of ``intent.caller_id`` (``None`` when missing, withheld or
    invalid: :func:`callguard.core.numbers.normalise_caller_id`);
    ``facts`` is ``None`` when the stores could not answer, and then the
    decision is ``lookup_unavailable``, retryable: never allow what could not
    be checked. A deny lists every deny reason that applies; an allow lists
    the exceptions it relied on.
    """
    rules, versions, facts_json = pack_start(intent, callee, facts, now, settings, caller, chosen)
    requires_operator = False
    if facts is not None:
        purpose = intent.purpose
        on = settings.active_rules(purpose)  # each rule below runs only if on, else its skip is recorded

        def skip(rule: str) -> RuleResult:
            return settings.skipped(rule, purpose)

        if callee is not None:
            register, consents = facts.register, facts.consents
            request = request_in_force(intent, consents, facts.calls, now, settings)
            rules += (
                check_register(intent, register, consents, now, settings, request)
                if "opposition_register" in on
                else skip("opposition_register"),
                check_directory(intent, facts, now, settings, request) if "directory" in on else skip("directory"),
                check_automated(intent, facts, now, settings) if "automated_calls" in on else skip("automated_calls"),
                check_optout(intent.client_id, facts.optouts, consents, now, settings, request)
                if "internal_dnc" in on
                else skip("internal_dnc"),
                check_caller_id(intent, caller, facts.operator, settings, now)
                if "caller_id" in on
                else skip("caller_id"),
                check_calling_hours(callee, now, settings) if "calling_hours" in on else skip("calling_hours"),
                check_frequency(intent, facts.calls, now, settings) if "frequency_cap" in on else skip("frequency_cap"),
                check_silent_calls(facts.silent_at, now, settings) if "silent_calls" in on else skip("silent_calls"),
                check_campaign_silent_rate(facts.campaign_outcomes, settings)
                if "campaign_silent_rate" in on
                else skip("campaign_silent_rate"),
            )
            used = most_recent_result(register)
            versions["register"] = None if used is None else used.as_of.isoformat()
            versions["directory"] = None if facts.directory_as_of is None else facts.directory_as_of.isoformat()
            facts_json["register"] = [r.to_json() for r in register]
            facts_json["consents"] = [c.to_json() for c in consents]
            facts_json["optouts"] = [o.to_json() for o in facts.optouts]
            facts_json["directory"] = {"extract": versions["directory"], "listed": facts.listed}
            facts_json["calls"] = [{"at": when_to_json(call.at), "ref": call.ref} for call in facts.calls]
            facts_json["silent_at"] = when_to_json(facts.silent_at)
            facts_json["campaign_outcomes"] = facts.campaign_outcomes
            # how far back the stores looked: a replay under a policy that looks
            # further back would lack facts, and must say so instead of guessing
            facts_json["lookback"] = lookback(settings)
            requires_operator = "silent_calls" in on and operator_required(intent, facts, settings)
    return pack_decision(intent, callee, now, rules, versions, facts_json, chosen, requires_operator)


def malformed(intent_id: str, error: str, now: datetime, settings: PolicySettings) -> Decision:
    """The deny for an intent that broke the contract but whose id was readable."""
    rule = RuleResult("well_formed", "deny", (Reason.MALFORMED_INTENT,), {"error": error})
    return Decision(
        intent_id=intent_id,
        allow=False,
        reasons=(Reason.MALFORMED_INTENT,),
        callee=None,
        decided_at=now,
        retryable=False,
        versions={"policy": settings.version},
        rules=(rule,),
    )


# The United States pack's rules live in their own module; it imports the
# shared rules above, so it is imported last, as a module (either may be
# imported first).
from callguard.core import uspolicy  # noqa: E402
