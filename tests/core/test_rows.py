"""The fields of the loaders' rows and of consent messages (``core/rows.py``): each bound pinned on both sides."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from callguard.core.rows import consent_row, id_field
from callguard.core.schema import MAX_ID_LENGTH

ROME = ZoneInfo("Europe/Rome")


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (MAX_ID_LENGTH, True), (MAX_ID_LENGTH + 1, False)])
def test_an_id_has_1_to_128_characters(length, ok) -> None:
    row = {"client_id": "c" * length}
    if ok:
        assert id_field(row, "client_id") == "c" * length
    else:
        with pytest.raises(ValueError, match="client_id must be 1-128 characters"):
            id_field(row, "client_id")


def consent(granted_at: str, ends_at: str) -> dict[str, str]:
    return {"callee": "+393475555555", "client_id": "acme", "basis": "consent", "granted_at": granted_at,
            "ends_at": ends_at}  # fmt: skip


@pytest.mark.parametrize(
    ("granted_at", "ends_at", "ok"),
    [
        ("2025-03-01", "2025-02-28", False),
        ("2025-03-01", "2025-03-01", True),  # ends the day it was given: one day
        ("2025-03-01T10:00:00+01:00", "2025-03-01T09:59:59+01:00", False),
        ("2025-03-01T10:00:00+01:00", "2025-03-01T10:00:00+01:00", True),
        ("2025-03-01T10:00:00+01:00", "2025-03-01", True),  # a day against an instant: Italian days
        ("2025-03-01T10:00:00+01:00", "2025-02-28", False),
    ],
)
def test_a_consent_may_end_the_moment_or_the_day_it_was_given_not_before(granted_at, ends_at, ok) -> None:
    if ok:
        _, parsed = consent_row(consent(granted_at, ends_at), "IT", ROME)
        assert parsed.ends_at is not None
    else:
        with pytest.raises(ValueError, match="ends_at is before granted_at"):
            consent_row(consent(granted_at, ends_at), "IT", ROME)


def test_instants_of_a_consent_keep_their_offset() -> None:
    _, parsed = consent_row(consent("2025-03-01T10:00:00+01:00", "2025-03-02"), "IT", ROME)
    assert parsed.granted_at == datetime(2025, 3, 1, 9, tzinfo=UTC) and parsed.ends_at == date(2025, 3, 2)
