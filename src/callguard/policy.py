"""The decision policy: a pure function of (intent, facts, clock) to a decision.

No I/O happens here, so every rule can be tested exhaustively and a
compliance officer can read each rule next to the law it implements. Sources
are cited in each rule's docstring; the short names used there:

- **L. 5/2018**: Legge 11 gennaio 2018, n. 5, on the opposition register for
  calls (art. 1): registering revokes earlier marketing consents, except
  consents given afterwards and contracts in force or ended less than 30 days
  before.
- **DPR 26/2022**: the regulation of the *Registro pubblico delle opposizioni*
  (RPO), in force 27 July 2022: mobile and unlisted numbers, calls by
  operators and automated systems; callers consult the register before each
  campaign and at least monthly, and a consultation result is treated as
  valid for 15 days.
- **Codice di condotta 2024**: the Garante's code of conduct for
  telemarketing and teleselling (approved 7 March 2024, in force 28 September
  2024): calls only through call centres registered in the ROC and bound by
  contract, only to numbers not opposed or with valid consent.
- **Garante, Feb 2025**: blanket ("omnibus") consents do not override the
  register; only a consent for the calling client counts.
- **GDPR art. 21(3)**: once a person objects to direct marketing, their data
  may no longer be processed for it (the internal do-not-call list).

A guard fails closed: whatever could not be checked is denied with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from callguard.facts import Consent, Facts, Operator, OptOut, RegisterResult, When, proven_after
from callguard.schema import ALL_CLIENTS, Intent, Purpose, Reason, rfc3339

POLICY_VERSION = "it-core/1"

Outcome = Literal["pass", "deny", "allow_exception", "skipped"]

#: The purposes the opposition register covers: advertising, direct sales and
#: market research or surveys (DPR 26/2022). ``service`` calls are outside it.
REGISTER_PURPOSES = frozenset({Purpose.MARKETING, Purpose.SURVEY})


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Parameters of the policy, each with the precedent for its default."""

    #: DPR 26/2022 practice: a consultation result is valid 15 days.
    register_max_age_days: int = 15
    #: L. 5/2018: contracts ended less than 30 days ago still allow calls.
    contract_grace_days: int = 30
    #: Day boundaries (register age, operator validity) are Italian days.
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("Europe/Rome"))
    version: str = POLICY_VERSION


@dataclass(frozen=True, slots=True)
class RuleResult:
    """How one rule judged one intent: the audit trail lists one per rule."""

    rule: str
    outcome: Outcome
    reasons: tuple[Reason, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

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

    def to_message(self) -> dict[str, Any]:
        """The decision as published on ``callguard.decisions`` (public contract)."""
        return {
            "intent_id": self.intent_id,
            "decision": "allow" if self.allow else "deny",
            "reasons": list(self.reasons),
            "callee": self.callee,
            "decided_at": rfc3339(self.decided_at),
            "retryable": self.retryable,
            "versions": self.versions,
        }

    def to_audit(self, intent: Intent | None, source: dict[str, Any]) -> dict[str, Any]:
        """The audit record: the decision, the normalised inputs, every rule
        with its outcome, and the facts it used (the evidence)."""
        record = self.to_message()
        record["intent"] = None if intent is None else _intent_json(intent, self.callee)
        record["rules"] = [rule.to_json() for rule in self.rules]
        record["facts"] = self.facts
        record["source"] = source
        return record


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
    }


# --- rules --------------------------------------------------------------------


def check_callee(callee: str | None) -> RuleResult:
    """The callee must be a valid number.

    Source: DPR 26/2022 and L. 5/2018 protect numbers; a number that cannot be
    normalised cannot be looked up in the register, so the guard fails closed
    (``invalid_number``) instead of calling it unchecked.
    """
    if callee is None:
        return RuleResult("callee_number", "deny", (Reason.INVALID_NUMBER,))
    return RuleResult("callee_number", "pass", detail={"callee": callee})


def check_operator(operator_id: str, operator: Operator | None, today: date) -> RuleResult:
    """The call centre must be on the certification list, active and in term.

    Source: Codice di condotta 2024 (callers and their clients work only with
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


def most_recent_result(results: tuple[RegisterResult, ...]) -> RegisterResult | None:
    """The result that wins for this client: the most recent consultation;
    on the same day a client's own result beats a ``*`` one (the citizen may
    have withdrawn the opposition for that client only)."""
    if not results:
        return None
    return max(results, key=lambda r: (r.as_of, r.client_id != ALL_CLIENTS))


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
    """A contract counts from its start while in force and for less than
    ``contract_grace_days`` (30) after it ended (L. 5/2018)."""
    tz = settings.timezone
    if not has_begun(contract.granted_at, now, tz):
        return False
    if contract.ends_at is None:
        return True
    grace = timedelta(days=settings.contract_grace_days)
    if isinstance(contract.ends_at, datetime):
        return now - contract.ends_at < grace
    return now.astimezone(tz).date() - contract.ends_at < grace


def check_register(
    intent: Intent,
    results: tuple[RegisterResult, ...],
    consents: tuple[Consent, ...],
    now: datetime,
    settings: PolicySettings,
) -> RuleResult:
    """Marketing and survey calls need a fresh, clear register result, or an exception.

    Sources, step by step:

    1. No result that applies to this client: ``not_checked``. DPR 26/2022
       obliges callers to consult the register before calling; a number never
       checked must not be called.
    2. The most recent applicable result is older than the maximum age
       (default 15 days, DPR 26/2022 practice): ``register_stale``.
    3. The result is ``opposed``: ``opposition_register`` (L. 5/2018,
       DPR 26/2022), unless an exception for **this client** holds
       (Garante, Feb 2025: no omnibus consents):

       - a ``contract`` in force, or ended less than 30 days ago (L. 5/2018):
         allow with ``contract``;
       - a ``consent`` given after the person registered (L. 5/2018:
         registration revokes earlier consents): allow with ``consent``.
         When the registration day is unknown, only a consent after the
         result's as-of day counts, since nothing else proves it came later.

    A stale ``opposed`` result gives both ``register_stale`` and
    ``opposition_register``: a deny lists every reason that applies.
    ``service`` calls are outside the register (``skipped``).
    """
    if intent.purpose not in REGISTER_PURPOSES:
        return RuleResult("opposition_register", "skipped", detail={"purpose": intent.purpose.value})
    result = most_recent_result(results)
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
    if age_days > settings.register_max_age_days:
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


def _register_exceptions(
    client_id: str, result: RegisterResult, consents: tuple[Consent, ...], now: datetime, settings: PolicySettings
) -> list[tuple[Reason, Consent]]:
    tz = settings.timezone
    registered: date = result.registered_at if result.registered_at is not None else result.as_of
    found: list[tuple[Reason, Consent]] = []
    for consent in consents:
        if consent.client_id != client_id:
            continue
        if consent.basis == "contract" and contract_in_grace(consent, now, settings):
            found.append((Reason.CONTRACT, consent))
        elif (
            consent.basis == "consent"
            and consent_in_force(consent, now, tz)
            and proven_after(consent.granted_at, registered, tz)
        ):
            found.append((Reason.CONSENT, consent))
    found.sort(key=lambda pair: pair[0] != Reason.CONTRACT)
    return found


def check_optout(
    client_id: str, optouts: tuple[OptOut, ...], consents: tuple[Consent, ...], now: datetime, settings: PolicySettings
) -> RuleResult:
    """A callee on the internal do-not-call list for this client (or ``*``) is not called.

    Source: GDPR art. 21(3) (objection to direct marketing must be honoured)
    and the Codice di condotta 2024. Exception: a ``consent`` for this client
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
    return RuleResult("internal_dnc", "deny", (Reason.INTERNAL_DNC,), detail)


# --- the decision ---------------------------------------------------------------


def decide(
    intent: Intent, callee: str | None, facts: Facts | None, now: datetime, settings: PolicySettings
) -> Decision:
    """Decide one intent.

    ``callee`` is the E.164 form of ``intent.callee`` (``None`` when invalid);
    ``facts`` is ``None`` when the stores could not answer, and then the
    decision is ``lookup_unavailable``, retryable: never allow what could not
    be checked. A deny lists every deny reason that applies; an allow lists
    the exceptions it relied on.
    """
    rules: list[RuleResult] = [check_callee(callee)]
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
    else:
        versions.update(facts.versions)
        today = now.astimezone(settings.timezone).date()
        rules.append(check_operator(intent.operator_id, facts.operator, today))
        facts_json["operator"] = None if facts.operator is None else facts.operator.to_json()
        if callee is not None:
            register_rule = check_register(intent, facts.register, facts.consents, now, settings)
            rules.append(register_rule)
            rules.append(check_optout(intent.client_id, facts.optouts, facts.consents, now, settings))
            used = most_recent_result(facts.register)
            versions["register"] = None if used is None else used.as_of.isoformat()
            facts_json["register"] = [r.to_json() for r in facts.register]
            facts_json["consents"] = [c.to_json() for c in facts.consents]
            facts_json["optouts"] = [o.to_json() for o in facts.optouts]
    deny = tuple(reason for rule in rules if rule.outcome == "deny" for reason in rule.reasons)
    if deny:
        reasons = deny
    else:
        reasons = tuple(dict.fromkeys(r for rule in rules if rule.outcome == "allow_exception" for r in rule.reasons))
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
    )


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
