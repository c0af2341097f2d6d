"""The public contract: topic names, message fields and reason codes.

Dialers and downstream systems build against these names, so they only ever
change additively (new optional fields, new reason codes). The README's
"Contract" section documents every name here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

import orjson

# --- topics -----------------------------------------------------------------

INTENTS_TOPIC = "callguard.intents"
DECISIONS_TOPIC = "callguard.decisions"
AUDIT_TOPIC = "callguard.audit"
DEADLETTER_TOPIC = "callguard.deadletter"
OPTOUTS_TOPIC = "callguard.optouts"
#: Call outcomes reported by dialers (``GuardClient.report_outcome``): silent-call blocks and abandoned-call rates.
OUTCOMES_TOPIC = "callguard.outcomes"
#: Real-time consents, contracts and call requests (``GuardClient.record_consent``); withdrawals are opt-outs.
CONSENTS_TOPIC = "callguard.consents"

#: Largest message the guard accepts; larger ones are malformed by contract.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_LENGTH = 128

#: ``client_id`` value that means "every client" in opt-outs and register loads.
ALL_CLIENTS = "*"


class Reason(StrEnum):
    """Machine-readable reasons carried by every decision (exact strings)."""

    # deny
    INVALID_NUMBER = "invalid_number"
    NOT_CHECKED = "not_checked"
    REGISTER_STALE = "register_stale"
    OPPOSITION_REGISTER = "opposition_register"
    INTERNAL_DNC = "internal_dnc"
    OPERATOR_UNKNOWN = "operator_unknown"
    OPERATOR_INACTIVE = "operator_inactive"
    OPERATOR_EXPIRED = "operator_expired"
    LOOKUP_UNAVAILABLE = "lookup_unavailable"
    MALFORMED_INTENT = "malformed_intent"
    # deny, Italian calling rules (policy file)
    CALLER_ID_MISSING = "caller_id_missing"
    CALLER_ID_NOT_DECLARED = "caller_id_not_declared"
    CALLER_ID_WRONG_PREFIX = "caller_id_wrong_prefix"
    OUTSIDE_CALLING_HOURS = "outside_calling_hours"
    TIMEZONE_UNKNOWN = "timezone_unknown"
    FREQUENCY_CAP = "frequency_cap"
    RECENT_SILENT_CALL = "recent_silent_call"
    # deny, consents (number not in the public directories, automated calls)
    CONSENT_REQUIRED = "consent_required"
    # deny, the campaign's silent-call rate is over the limit
    CAMPAIGN_SILENT_RATE = "campaign_silent_rate"
    # deny, the supply chain
    OPERATOR_NOT_MANDATED = "operator_not_mandated"
    CALLER_ID_FOREIGN_ORIGIN = "caller_id_foreign_origin"
    # deny, jurisdictions: the callee's country has no policy pack
    NO_POLICY_FOR_COUNTRY = "no_policy_for_country"
    # deny, the United States pack
    NATIONAL_DNC = "national_dnc"
    STATE_DNC = "state_dnc"
    NUMBER_REASSIGNED = "number_reassigned"
    # allow on an exception
    CONSENT = "consent"
    CONTRACT = "contract"
    REQUEST = "request"
    #: the United States pack: an established business relationship (16 CFR 310.2(q))
    EBR_TRANSACTION = "ebr_transaction"
    EBR_INQUIRY = "ebr_inquiry"


class Purpose(StrEnum):
    """Why the call is made: the rules and the caller-ID prefix depend on it."""

    #: advertising, direct sales, commercial communication
    MARKETING = "marketing"
    #: market research (L. 5/2018 art. 2 c. 1: prefix 0844, like marketing)
    SURVEY = "survey"
    #: statistical surveys (L. 5/2018 art. 2 c. 1: prefix 0843)
    STATISTICAL = "statistical"
    #: calls about an existing service (outside the register)
    SERVICE = "service"


class CallOutcome(StrEnum):
    """What a dialer reports about a call it placed (``callguard.outcomes``)."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    SILENT = "silent"
    ABANDONED = "abandoned"


#: Outcomes where a person answered and no operator was there: they count
#: against the abandoned-call rate and block the callee (Garante, silent calls).
SILENT_OUTCOMES = frozenset({CallOutcome.SILENT, CallOutcome.ABANDONED})


class MalformedIntent(ValueError):
    """An intent that breaks the contract; ``intent_id`` is set when readable."""

    def __init__(self, error: str, intent_id: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.intent_id = intent_id


@dataclass(frozen=True, slots=True)
class Intent:
    """A dialer's request to place one call, as validated from the wire."""

    intent_id: str
    callee: str
    operator_id: str
    client_id: str
    purpose: Purpose = Purpose.MARKETING
    caller_id: str | None = None
    campaign_id: str | None = None
    requested_at: datetime | None = None
    #: placed by an automated calling system without an operator (Codice privacy art. 130 c. 1-2)
    automated: bool = False
    #: the campaign's script (Codice di condotta art. 10 c. 1): evidence, kept in the audit record
    script_id: str | None = None
    #: where the number came from (a list provider, or ``directory``): evidence
    list_source: str | None = None


def _required_id(obj: dict[str, Any], name: str, intent_id: str | None) -> str:
    value = obj.get(name)
    if value is None:
        raise MalformedIntent(f"missing field {name!r}", intent_id)
    if not isinstance(value, str):
        raise MalformedIntent(f"field {name!r} must be a string", intent_id)
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise MalformedIntent(f"field {name!r} must be 1-{MAX_ID_LENGTH} characters", intent_id)
    return value


def _optional_str(obj: dict[str, Any], name: str, intent_id: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise MalformedIntent(f"field {name!r} must be a string of at most {MAX_ID_LENGTH} characters", intent_id)
    return value


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (offset required) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return parsed.astimezone(UTC)


def _readable_id(value: bytes) -> str | None:
    """The intent_id of an oversized message, so its dialer still gets a deny
    (the broker already bounds how large a message can be)."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return _valid_id(obj.get("intent_id")) if isinstance(obj, dict) else None


def _valid_id(raw_id: object) -> str | None:
    """``raw_id`` when it is a valid intent id: the id a deny can still answer to."""
    return raw_id if isinstance(raw_id, str) and 1 <= len(raw_id) <= MAX_ID_LENGTH else None


def parse_intent(value: bytes | None) -> Intent:
    """Validate one raw message from ``callguard.intents``.

    Raises :class:`MalformedIntent` with a one-line error; its ``intent_id`` is
    set whenever the id itself could be read, so the dialer still gets a deny.
    """
    if value is None:
        raise MalformedIntent("empty message")
    if len(value) > MAX_MESSAGE_BYTES:
        raise MalformedIntent(f"message larger than {MAX_MESSAGE_BYTES} bytes", _readable_id(value))
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedIntent(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedIntent("not a JSON object")
    readable_id = _valid_id(obj.get("intent_id"))
    intent_id = _required_id(obj, "intent_id", None)
    callee = obj.get("callee")
    if not isinstance(callee, str):
        raise MalformedIntent(
            "field 'callee' must be a string" if callee is not None else "missing field 'callee'", readable_id
        )
    operator_id = _required_id(obj, "operator_id", intent_id)
    client_id = _required_id(obj, "client_id", intent_id)
    if client_id == ALL_CLIENTS:
        raise MalformedIntent("client_id '*' is reserved for opt-outs and register loads", intent_id)
    purpose_raw = obj.get("purpose", Purpose.MARKETING.value)
    try:
        purpose = Purpose(purpose_raw)
    except (ValueError, TypeError):
        raise MalformedIntent(f"field 'purpose' must be one of {', '.join(Purpose)}", intent_id) from None
    requested_raw = obj.get("requested_at")
    requested_at = None
    if requested_raw is not None:
        if not isinstance(requested_raw, str):
            raise MalformedIntent("field 'requested_at' must be an RFC 3339 string", intent_id)
        try:
            requested_at = parse_rfc3339(requested_raw)
        except ValueError:
            raise MalformedIntent("field 'requested_at' is not an RFC 3339 timestamp", intent_id) from None
    automated = obj.get("automated", False)
    if automated is None:
        automated = False
    if not isinstance(automated, bool):
        raise MalformedIntent("field 'automated' must be true or false", intent_id)
    return Intent(
        intent_id=intent_id,
        callee=callee,
        operator_id=operator_id,
        client_id=client_id,
        purpose=purpose,
        caller_id=_optional_str(obj, "caller_id", intent_id),
        campaign_id=_optional_str(obj, "campaign_id", intent_id),
        requested_at=requested_at,
        automated=automated,
        script_id=_optional_str(obj, "script_id", intent_id),
        list_source=_optional_str(obj, "list_source", intent_id),
    )


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """One call outcome as validated from ``callguard.outcomes``."""

    intent_id: str
    outcome: CallOutcome
    at: datetime


def parse_outcome(value: bytes | None) -> OutcomeReport:
    """Validate one raw message from ``callguard.outcomes``; raises ``ValueError``
    with a one-line error (the message then goes to the dead letters)."""
    if value is None or len(value) > MAX_MESSAGE_BYTES:
        raise ValueError("empty or oversized message")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    intent_id = obj.get("intent_id")
    if not isinstance(intent_id, str) or not 1 <= len(intent_id) <= MAX_ID_LENGTH:
        raise ValueError(f"field 'intent_id' must be a string of 1-{MAX_ID_LENGTH} characters")
    try:
        outcome = CallOutcome(str(obj.get("outcome")))
    except ValueError:
        raise ValueError(f"field 'outcome' must be one of {', '.join(o.value for o in CallOutcome)}") from None
    at = obj.get("at")
    if not isinstance(at, str):
        raise ValueError("field 'at' must be an RFC 3339 string")
    try:
        moment = parse_rfc3339(at)
    except ValueError:
        raise ValueError("field 'at' is not an RFC 3339 timestamp") from None
    return OutcomeReport(intent_id, outcome, moment)


@lru_cache(maxsize=64)
def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with millisecond precision
    (cached: a whole batch shares one decision time)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(obj: Any) -> bytes:
    """The one JSON encoder for everything callguard writes to Kafka."""
    return orjson.dumps(obj)
