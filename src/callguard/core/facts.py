"""Looked-up facts: what the stores know about one callee, operator and client.

These are plain values handed from the stores (the imperative shell) to the
policy (the functional core). A point in time is either a ``date`` (the source
only gave a day) or an aware ``datetime``; :func:`proven_after` compares the
two kinds without claiming more precision than the source gave.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any, Literal, TypeAlias

When: TypeAlias = date | datetime
"""A day, or an aware instant. ``datetime`` is a subclass of ``date``: test for it first."""

OperatorStatus = Literal["active", "suspended", "revoked"]
#: ``request``: the person asked this client for the call or a call back (one call).
#: ``ebr_transaction``, ``ebr_inquiry``: the United States pack's established business
#: relationship (16 CFR 310.2(q)): ``granted_at`` is the last purchase or transaction, or the inquiry.
Basis = Literal["consent", "contract", "request", "ebr_transaction", "ebr_inquiry"]
BASES: tuple[str, ...] = ("consent", "contract", "request", "ebr_transaction", "ebr_inquiry")


def local_day(when: When, tz: tzinfo) -> date:
    """The calendar day of ``when`` in ``tz`` (a plain date is already a day)."""
    if isinstance(when, datetime):
        return when.astimezone(tz).date()
    return when


def proven_after(later: When, earlier: When, tz: tzinfo) -> bool:
    """True only when ``later`` is provably after ``earlier``.

    Two instants compare exactly. When either side is only a day, the event
    could have happened at any time that day, so only a strictly later day
    proves the order: a consent dated the same day as a registration does not
    provably come after it (the caller bears the burden of proof).
    """
    if isinstance(later, datetime) and isinstance(earlier, datetime):
        return later > earlier
    return local_day(later, tz) > local_day(earlier, tz)


def when_to_json(when: When | None) -> str | None:
    if when is None:
        return None
    if isinstance(when, datetime):
        return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return when.isoformat()


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """One opposition-register consultation result for one number.

    ``client_id`` is ``*`` when the result applies to every client, or the one
    client whose list was submitted (a citizen may withdraw the opposition for
    chosen companies only, so results can differ per client).
    """

    opposed: bool
    as_of: date
    registered_at: date | None
    client_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "opposed" if self.opposed else "clear",
            "as_of": self.as_of.isoformat(),
            "registered_at": when_to_json(self.registered_at),
            "client_id": self.client_id,
        }


@dataclass(frozen=True, slots=True)
class NamedResult:
    """A number looked up in a register loaded under a name of its own
    (``callguard register load --register NAME``, e.g. the US National Do Not
    Call Registry): ``as_of`` is the day of the list that covers the number
    (None: no list loaded covers it), ``listed`` whether the number is on it."""

    name: str
    listed: bool
    as_of: date | None

    def to_json(self) -> dict[str, Any]:
        return {
            "register": self.name,
            "listed": self.listed,
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Operator:
    """A call-centre operator from the certification list."""

    operator_id: str
    status: OperatorStatus
    valid_from: date
    valid_until: date
    caller_ids: tuple[str, ...] = ()
    #: Where the operator places its calls from (ISO 3166-1 alpha-2).
    country: str = "IT"

    def to_json(self) -> dict[str, Any]:
        return {
            "operator_id": self.operator_id,
            "status": self.status,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
            "country": self.country,
        }


@dataclass(frozen=True, slots=True)
class Mandate:
    """A client's contract with a call centre, in force ``valid_from..valid_until`` (Italian days, inclusive)."""

    client_id: str
    operator_id: str
    valid_from: date
    valid_until: date

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "operator_id": self.operator_id,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Consent:
    """A consent or a contract between the callee and one client."""

    client_id: str
    basis: Basis
    granted_at: When
    ends_at: When | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "basis": self.basis,
            "granted_at": when_to_json(self.granted_at),
            "ends_at": when_to_json(self.ends_at),
        }


@dataclass(frozen=True, slots=True)
class OptOut:
    """An entry of the internal do-not-call list (``client_id`` may be ``*``)."""

    client_id: str
    at: When

    def to_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "at": when_to_json(self.at)}


def intent_ref(intent_id: str) -> str:
    """A short, stable reference to an intent (40 bits of BLAKE2b): enough to
    tell apart the few calls kept per callee and client, without storing ids."""
    return hashlib.blake2b(intent_id.encode(), digest_size=5).hexdigest()


@dataclass(frozen=True, slots=True)
class PastCall:
    """A call this guard allowed to one callee for one client (frequency caps).

    ``ref`` is a short hash of the intent_id: a redelivered intent finds
    itself among the past calls and is not counted twice.
    """

    at: datetime
    ref: str


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the stores returned for one intent.

    ``register`` and ``optouts`` hold every result that applies to the intent's
    client (its own and the ``*`` ones); the policy chooses among them, so that
    choice is tested with the rules.
    """

    operator: Operator | None
    register: tuple[RegisterResult, ...] = ()
    consents: tuple[Consent, ...] = ()
    optouts: tuple[OptOut, ...] = ()
    versions: dict[str, str | None] = field(default_factory=dict)
    #: Calls allowed to this callee for this client, newest last (frequency caps).
    calls: tuple[PastCall, ...] = ()
    #: The latest silent or abandoned call to this callee for this client.
    silent_at: datetime | None = None
    #: The callee is in the public-directory extract in use (``directory_as_of``).
    listed: bool = False
    #: As-of day of the public-directory extract in use; None when none is loaded.
    directory_as_of: date | None = None
    #: Outcomes reported for the intent's campaign over the silent-call window
    #: (``campaign_silent_rate``): outcome -> count; None when not looked up.
    campaign_outcomes: dict[str, int] | None = None
    #: The client's mandates to the intent's operator (every period loaded).
    mandates: tuple[Mandate, ...] = ()
    #: Named registers (the US pack's do-not-call lists) by name, those the
    #: callee's policy pack reads.
    registers: dict[str, NamedResult] = field(default_factory=dict)
    #: The day the number was last permanently disconnected, when known
    #: (``callguard reassigned load``; 47 CFR 64.1200(m)).
    disconnected_at: date | None = None
