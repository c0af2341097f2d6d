"""Calling hours and the Italian holiday calendar at their boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from callguard.core.hours import (
    ROME,
    CallingHours,
    callee_local_time,
    calling_window,
    easter_sunday,
    italian_holidays,
    next_window_start,
    within_calling_hours,
)


@pytest.mark.parametrize(
    ("year", "easter"),
    [(2024, date(2024, 3, 31)), (2025, date(2025, 4, 20)), (2026, date(2026, 4, 5)), (2027, date(2027, 3, 28)),
     (2038, date(2038, 4, 25)), (2000, date(2000, 4, 23))],
)  # fmt: skip
def test_easter(year, easter) -> None:
    assert easter_sunday(year) == easter


def test_national_holidays_2026() -> None:
    days = italian_holidays(2026)
    assert days[date(2026, 4, 6)] == "Lunedì dell'Angelo"
    assert date(2026, 4, 25) in days and date(2026, 6, 2) in days and date(2026, 12, 26) in days
    assert days[date(2026, 10, 4)] == "San Francesco d'Assisi" and date(2025, 10, 4) not in italian_holidays(2025)
    assert len(days) == 13


def rome(*args: int) -> datetime:
    return datetime(*args, tzinfo=ROME)


@pytest.mark.parametrize(
    ("moment", "allowed"),
    [
        (rome(2026, 11, 27, 19, 59, 59), True),  # Friday
        (rome(2026, 11, 27, 20, 0, 0), False),
        (rome(2026, 11, 27, 8, 59, 59), False),
        (rome(2026, 11, 27, 9, 0, 0), True),
        (rome(2026, 11, 28, 9, 30), False),  # Saturday opens at 10
        (rome(2026, 11, 28, 18, 59, 59), True),
        (rome(2026, 11, 28, 19, 0), False),
        (rome(2026, 11, 29, 12, 0), False),  # Sunday
        (rome(2027, 1, 1, 12, 0), False),  # New Year's Day
        (rome(2026, 4, 4, 12, 0), True),  # the Saturday before Easter Monday
        (rome(2026, 4, 4, 19, 30), False),
        (rome(2026, 4, 6, 12, 0), False),  # Easter Monday
        (rome(2026, 12, 7, 19, 30), False),  # Monday, the eve of 8 December: 10-19
        (rome(2026, 12, 7, 9, 30), False),
        (rome(2026, 12, 7, 10, 0), True),
        (rome(2026, 3, 29, 9, 30), False),  # Sunday of the DST change
        (rome(2026, 3, 30, 9, 0), True),  # the Monday after: local time, not UTC
    ],
)
def test_calling_hours(moment, allowed) -> None:
    assert within_calling_hours(moment) == allowed


def test_windows_that_only_touch_leave_a_day_without_calls() -> None:
    # a Saturday 10-15 before a holiday whose eve is 15-19: the intersection is empty, not 15:00-15:00,
    # so the next window is the Monday's, not a Saturday window that never opens
    hours = CallingHours(saturday=(time(10), time(15)), pre_holiday=(time(15), time(19)))
    assert calling_window(date(2026, 4, 4), hours=hours) is None  # the Saturday before Easter Monday
    assert next_window_start(rome(2026, 4, 4, 9, 0), hours=hours) == rome(2026, 4, 7, 9, 0)
    # a minute of overlap is a window
    hours = CallingHours(saturday=(time(10), time(15, 1)), pre_holiday=(time(15), time(19)))
    assert calling_window(date(2026, 4, 4), hours=hours) == (time(15), time(15, 1))


def test_a_province_can_add_its_patron_saint() -> None:
    ambrogio = ((12, 7, "Sant'Ambrogio"),)  # Milan
    assert calling_window(date(2026, 12, 7), ambrogio) is None
    assert calling_window(date(2026, 12, 4), ambrogio) == (time(9), time(20))  # Friday
    assert calling_window(date(2026, 12, 5), ambrogio) == (time(10), time(19))  # Saturday


def test_local_time_only_when_every_zone_of_the_number_agrees() -> None:
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert callee_local_time("+393475555555", now).hour == 14  # Rome and Vatican agree (CEST)
    assert callee_local_time("+12025550143", now).hour == 8  # Washington DC, EDT
    assert callee_local_time("+79161234567", now) is None  # Russian mobiles: eleven offsets
    assert callee_local_time("not a number", now) is None


def test_the_country_fast_path_gives_the_same_local_time_as_a_full_parse() -> None:
    """callee_local_time skips the parse when every zone of the country agrees;
    on libphonenumber's example number of every region and type, the answer is
    the one the number's own zones give."""
    import phonenumbers
    from phonenumbers import timezone as number_timezones

    from callguard.core.hours import agreed_local_time

    for now in (datetime(2026, 11, 28, 12, tzinfo=UTC), datetime(2026, 7, 1, 3, tzinfo=UTC)):
        checked = 0
        for region in phonenumbers.SUPPORTED_REGIONS:
            for kind in range(12):
                example = phonenumbers.example_number_for_type(region, kind)
                if example is None:
                    continue
                e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
                own = agreed_local_time(number_timezones.time_zones_for_number(example), now)
                fast = callee_local_time(e164, now)
                assert (fast is None) == (own is None), e164
                assert fast is None or own is None or fast.utcoffset() == own.utcoffset(), e164
                checked += 1
        assert checked > 1000
