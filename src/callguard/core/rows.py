"""One consent or opt-out as people write it: a line of a CSV file or a message.

The loaders (``consents load``, ``optouts load``) and the worker's live topics
(``callguard.consents``, ``callguard.optouts``) read the same fields the same
way, so both take them from here. Each reader raises ``ValueError`` saying
what is wrong, never echoing a phone number.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo

from callguard.core.facts import BASES, Consent, When, local_day
from callguard.core.numbers import normalise
from callguard.core.schema import ALL_CLIENTS, MAX_ID_LENGTH


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def parse_when(text: str, tz: tzinfo) -> When:
    """An ISO date, or an ISO datetime; a datetime without offset is local time in ``tz``."""
    if len(text) == 10:
        return parse_date(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO date or datetime: {text!r}") from None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def id_field(row: dict[str, str], name: str, allow_all: bool = False) -> str:
    """A client or operator id: 1 to ``MAX_ID_LENGTH`` characters, no ``|`` (the
    stores' separator), ``*`` (every client) only where ``allow_all``."""
    value = row.get(name, "")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"{name} must be 1-{MAX_ID_LENGTH} characters")
    if "|" in value:
        raise ValueError(f"{name} must not contain '|'")
    if value == ALL_CLIENTS and not allow_all:
        raise ValueError(f"{name} '*' (every client) is not allowed here")
    return value


def number_field(row: dict[str, str], name: str, region: str) -> str:
    """A phone number in E.164 (one without a country code is of ``region``)."""
    e164 = normalise(row.get(name, ""), region)
    if e164 is None:
        raise ValueError(f"{name} is not a valid phone number")
    return e164


def consent_row(row: dict[str, str], region: str, tz: tzinfo) -> tuple[str, Consent]:
    """One consent, contract or call request (a CSV line, or a message on
    ``callguard.consents``) as ``(E.164, Consent)``; ``ValueError`` names
    what is wrong. ``basis`` ``request``: the person asked this client for a
    call; without ``ends_at`` it counts for the policy's short validity."""
    e164 = number_field(row, "callee", region)
    client_id = id_field(row, "client_id")
    basis = row.get("basis", "")
    if basis not in BASES:
        raise ValueError(
            "basis must be 'consent', 'contract' or 'request' (or, for the US pack's established business "
            f"relationships, 'ebr_transaction' or 'ebr_inquiry'), not {basis!r}"
        )
    granted_at = parse_when(row.get("granted_at", ""), tz)
    ends_raw = row.get("ends_at", "")
    ends_at = parse_when(ends_raw, tz) if ends_raw else None
    if ends_at is not None and not _not_before(ends_at, granted_at, tz):
        raise ValueError("ends_at is before granted_at")
    return e164, Consent(client_id, basis, granted_at, ends_at)  # type: ignore[arg-type]


def _not_before(later: When, earlier: When, tz: tzinfo) -> bool:
    if isinstance(later, datetime) and isinstance(earlier, datetime):
        return later >= earlier
    return local_day(later, tz) >= local_day(earlier, tz)
